#pragma once
// Where the defect is: the connected components of a binary anomaly mask, each summarised for a
// person (bounding box, area, peak and mean anomaly score) and linked to the anomaly keyword whose
// focused patches (anomaly/patch_focus.hpp) overlap it most.
//
// Connectivity is 8 (pixels touching at a corner belong to one region), as scipy.ndimage.label
// with a 3x3 all-ones structure and as the MVTec AD protocol labels its ground-truth regions
// (eval/pro.hpp uses the same labelling): a thin diagonal scratch is one defect, not a staircase
// of many.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/anomaly/patch_focus.hpp"
#include "focuspatch/core/error.hpp"

namespace focuspatch {

// Connected components of a mask's nonzero pixels, 8-connected. labels[i] is 0 for background and
// 1..count for the region holding pixel i (row-major), numbered in raster order of first pixel.
struct RegionLabels {
  std::vector<std::uint32_t> labels;
  std::vector<std::uint32_t> sizes;  // sizes[r - 1] = pixel count of region r
  std::uint32_t count() const { return static_cast<std::uint32_t>(sizes.size()); }
};

inline RegionLabels label_regions(std::span<const std::uint8_t> mask, int width, int height,
                                  std::string_view what = "mask") {
  require(width > 0 && height > 0, what, ": mask has size ", width, "x", height);
  const auto w = static_cast<std::size_t>(width);
  const auto h = static_cast<std::size_t>(height);
  require(mask.size() == w * h, what, ": mask holds ", mask.size(), " pixels, a ", width, "x", height,
          " mask has ", w * h);
  RegionLabels out;
  out.labels.assign(mask.size(), 0);
  std::vector<std::size_t> stack;
  for (std::size_t start = 0; start < mask.size(); ++start) {
    if (mask[start] == 0 || out.labels[start] != 0) continue;
    require(out.sizes.size() < std::numeric_limits<std::uint32_t>::max() - 1, what, ": too many regions");
    const auto id = static_cast<std::uint32_t>(out.sizes.size() + 1);
    std::uint32_t size = 0;
    out.labels[start] = id;
    stack.push_back(start);
    while (!stack.empty()) {
      const std::size_t p = stack.back();
      stack.pop_back();
      ++size;
      const std::size_t y = p / w;
      const std::size_t x = p % w;
      for (std::size_t ny = (y > 0 ? y - 1 : 0); ny <= std::min(y + 1, h - 1); ++ny) {
        for (std::size_t nx = (x > 0 ? x - 1 : 0); nx <= std::min(x + 1, w - 1); ++nx) {
          const std::size_t q = ny * w + nx;
          if (mask[q] != 0 && out.labels[q] == 0) {
            out.labels[q] = id;
            stack.push_back(q);
          }
        }
      }
    }
    out.sizes.push_back(size);
  }
  return out;
}

// The binary mask of a map: 1 where the value is strictly above the threshold (as the verdict:
// a score equal to the threshold is normal), else 0.
inline std::vector<std::uint8_t> threshold_mask(const AnomalyMap& map, double threshold) {
  std::vector<std::uint8_t> mask(map.values.size());
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = static_cast<double>(map.values[i]) > threshold ? 1 : 0;
  return mask;
}

struct DefectRegion {
  int x = 0, y = 0, width = 0, height = 0;  // bounding box in the map's pixels (x, y: top-left, inclusive)
  std::uint64_t area = 0;                   // pixels in the region (not the box)
  float peak_score = 0.0f, mean_score = 0.0f;
  // The anomaly keyword whose focused patches cover most of the region's pixels (ties: the higher
  // keyword score, then bank order); empty when no focused patch touches the region.
  std::string keyword;
  double keyword_overlap = 0.0;  // share of the region's pixels inside that keyword's focused patches
};

// Regions of `mask` (row-major, the map's size) with their statistics over `map`, strongest peak
// first (ties: raster order of the first pixel). keywords: every anomaly keyword's focus on a
// grid x grid patch grid laid over the map (patch of pixel (x, y): row y * grid / H, column
// x * grid / W); empty keywords or grid 0: no keyword is named.
inline std::vector<DefectRegion> defect_regions(const AnomalyMap& map, std::span<const std::uint8_t> mask,
                                                std::span<const FocusedKeyword> keywords = {}, std::int64_t grid = 0) {
  detail::require_map(map, "defect regions");
  const RegionLabels labels = label_regions(mask, static_cast<int>(map.width), static_cast<int>(map.height), "defect regions: mask");
  const std::size_t count = labels.count();
  std::vector<DefectRegion> out(count);
  std::vector<int> x1(count, -1), y1(count, -1);
  std::vector<double> sums(count, 0.0);
  for (auto& r : out) r.x = r.y = std::numeric_limits<int>::max(), r.peak_score = -std::numeric_limits<float>::infinity();
  // Per region and keyword: pixels inside one of the keyword's focused patches.
  const std::size_t K = grid > 0 ? keywords.size() : 0;
  std::vector<std::vector<std::uint8_t>> focused(K, std::vector<std::uint8_t>(static_cast<std::size_t>(std::max<std::int64_t>(grid * grid, 0)), 0));
  for (std::size_t k = 0; k < K; ++k)
    for (std::int64_t p : keywords[k].patches)
      if (p >= 0 && p < grid * grid) focused[k][static_cast<std::size_t>(p)] = 1;
  std::vector<std::uint64_t> overlap(count * K, 0);
  for (std::int64_t y = 0; y < map.height; ++y) {
    for (std::int64_t x = 0; x < map.width; ++x) {
      const std::size_t i = static_cast<std::size_t>(y * map.width + x);
      if (labels.labels[i] == 0) continue;
      const std::size_t r = labels.labels[i] - 1;
      DefectRegion& d = out[r];
      d.x = std::min(d.x, static_cast<int>(x));
      d.y = std::min(d.y, static_cast<int>(y));
      x1[r] = std::max(x1[r], static_cast<int>(x));
      y1[r] = std::max(y1[r], static_cast<int>(y));
      d.peak_score = std::max(d.peak_score, map.values[i]);
      sums[r] += map.values[i];
      if (K) {
        const std::int64_t patch = (y * grid / map.height) * grid + x * grid / map.width;
        for (std::size_t k = 0; k < K; ++k) overlap[r * K + k] += focused[k][static_cast<std::size_t>(patch)];
      }
    }
  }
  for (std::size_t r = 0; r < count; ++r) {
    DefectRegion& d = out[r];
    d.area = labels.sizes[r];
    d.width = x1[r] - d.x + 1;
    d.height = y1[r] - d.y + 1;
    d.mean_score = static_cast<float>(sums[r] / static_cast<double>(d.area));
    std::size_t best = K;
    for (std::size_t k = 0; k < K; ++k) {
      const std::uint64_t o = overlap[r * K + k];
      if (o == 0) continue;
      if (best == K || o > overlap[r * K + best] || (o == overlap[r * K + best] && keywords[k].score > keywords[best].score)) best = k;
    }
    if (best < K) {
      d.keyword = keywords[best].name;
      d.keyword_overlap = static_cast<double>(overlap[r * K + best]) / static_cast<double>(d.area);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const DefectRegion& a, const DefectRegion& b) { return a.peak_score > b.peak_score; });
  return out;
}

}  // namespace focuspatch
