#pragma once
// Opens a foreign checkpoint by looking at its bytes, not its file name: users rename files, and
// CLIP checkpoints come as .pt, .bin, .pth or .safetensors whatever their format.
#include <cstring>
#include <string>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/safetensors.hpp"
#include "focuspatch/io/tensor_source.hpp"
#include "focuspatch/io/torch_archive.hpp"
#include "focuspatch/io/zip_archive.hpp"

namespace focuspatch {

// Reads a PyTorch (torch.save / TorchScript) or safetensors checkpoint into named tensors.
inline TensorArchive open_checkpoint(const std::string& path, const TorchReadOptions& torch_options = {}) {
  MappedFile file(path);
  const auto bytes = file.bytes();
  if (zip::has_signature(bytes) || torch_detail::is_legacy_format(bytes))
    return torch_detail::read(TensorArchive(std::move(file), "torch.save"), torch_options);
  if (safetensors::looks_like_safetensors(bytes)) {
    TensorArchive archive(std::move(file), "safetensors");
    safetensors::detail::read_into(archive);
    return archive;
  }
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0)
    fail(path, ": this is a GGUF file; focuspatch converts PyTorch and safetensors checkpoints");
  fail(path, ": not a recognized checkpoint (expected a PyTorch .pt/.pth/.bin zip archive or a .safetensors file)");
}

}  // namespace focuspatch
