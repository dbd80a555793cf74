#pragma once
// The converter's view of a foreign checkpoint: named tensors it can ask the shape of and load as
// fp32 one at a time. Each reader (torch zip, TorchScript, safetensors) is adapted to this.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {

class SourceTensors {
 public:
  struct Entry {
    DType dtype = DType::F32;
    Shape shape;
    std::function<FloatTensor()> load;  // contiguous fp32 copy
  };

  explicit SourceTensors(std::string origin) : origin_(std::move(origin)) {}

  const std::string& origin() const { return origin_; }
  void add(const std::string& name, Entry entry) { entries_[name] = std::move(entry); }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, e] : entries_) out.push_back(name);
    return out;
  }
  const Entry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) fail(origin_, ": tensor '", name, "' is missing from the checkpoint");
    return it->second;
  }
  const Shape& shape(const std::string& name) const { return entry(name).shape; }
  DType dtype(const std::string& name) const { return entry(name).dtype; }
  FloatTensor load(const std::string& name) const {
    FloatTensor t = entry(name).load();
    require(t.shape() == shape(name), origin_, ": tensor '", name, "' loaded with shape ", shape_string(t.shape()), " instead of ",
            shape_string(shape(name)));
    return t;
  }
  // Keeps only names starting with prefix, with the prefix removed (open_clip's "module.",
  // a training checkpoint's "state_dict.").
  SourceTensors strip_prefix(const std::string& prefix) const {
    SourceTensors out(origin_);
    for (const auto& [name, e] : entries_)
      if (name.rfind(prefix, 0) == 0) out.entries_[name.substr(prefix.size())] = e;
    return out;
  }

 private:
  std::string origin_;
  std::map<std::string, Entry> entries_;
};

}  // namespace focuspatch
