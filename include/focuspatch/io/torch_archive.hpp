#pragma once
// Reads PyTorch checkpoints without Python: torch.save zip archives (torch >= 1.6) and TorchScript
// archives from torch.jit.save (OpenAI's official CLIP .pt files are these). Both are zip files
// holding a pickle, <prefix>/data.pkl, that describes tensors as calls such as
//   torch._utils._rebuild_tensor_v2(persistent_id(('storage', torch.HalfStorage, '3', 'cpu', 768)),
//                                   offset, size, stride, requires_grad, hooks)
// whose storages are the entries <prefix>/data/<key>. We run the pickle with the non-executing VM
// of io/pickle.hpp and interpret those calls ourselves. Tensors are named as model.state_dict()
// would name them: nested dicts ({'state_dict': {...}}) are flattened with dots, TorchScript
// modules are walked through their attribute dicts (parameters, then buffers, then submodules),
// and a whole pickled nn.Module through _parameters/_buffers/_modules. Prefixes such as 'module.'
// or 'state_dict.' are left for the caller to strip.
#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/core/dtype.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/pickle.hpp"
#include "focuspatch/io/tensor_source.hpp"
#include "focuspatch/io/zip_archive.hpp"

namespace focuspatch {

struct TorchReadOptions {
  // TorchScript modules may hold tensors as plain attributes, which model.state_dict() leaves out
  // (CLIP's attention masks in scripted models, for instance). Set to read them too.
  bool include_attributes = false;
  // Check the CRC-32 of every stored storage entry (one extra pass over the weights).
  bool verify_crc = false;
  // data.pkl holds only the object structure (well under 1 MiB for a billion-parameter model);
  // anything near this size is corrupt or hostile.
  std::uint64_t max_pickle_bytes = std::uint64_t{256} << 20;
  pickle::Limits pickle_limits;
};

namespace torch_detail {

inline constexpr std::size_t kMaxNesting = 256;

// Files written by torch < 1.6 (or with _use_new_zipfile_serialization=False) start with a bare
// pickle, or are tar archives (torch < 0.4).
inline bool is_legacy_format(std::span<const std::byte> bytes) {
  if (bytes.size() >= 2 && bytes[0] == std::byte{0x80} && static_cast<std::uint8_t>(bytes[1]) <= 5) return true;
  return bytes.size() >= 262 && std::memcmp(bytes.data() + 257, "ustar", 5) == 0;
}

inline std::optional<DType> dtype_from_name(std::string_view n) {
  if (n == "float32" || n == "float") return DType::F32;
  if (n == "float16" || n == "half") return DType::F16;
  if (n == "bfloat16") return DType::BF16;
  if (n == "float64" || n == "double") return DType::F64;
  if (n == "int64" || n == "long") return DType::I64;
  if (n == "int32" || n == "int") return DType::I32;
  if (n == "int16" || n == "short") return DType::I16;
  if (n == "int8") return DType::I8;
  if (n == "uint8") return DType::U8;
  if (n == "bool") return DType::Bool;
  return std::nullopt;
}

inline std::optional<DType> dtype_from_storage_name(std::string_view n) {
  if (n == "FloatStorage") return DType::F32;
  if (n == "HalfStorage") return DType::F16;
  if (n == "BFloat16Storage") return DType::BF16;
  if (n == "DoubleStorage") return DType::F64;
  if (n == "LongStorage") return DType::I64;
  if (n == "IntStorage") return DType::I32;
  if (n == "ShortStorage") return DType::I16;
  if (n == "CharStorage") return DType::I8;
  if (n == "ByteStorage" || n == "UntypedStorage" || n == "_UntypedStorage") return DType::U8;
  if (n == "BoolStorage") return DType::Bool;
  return std::nullopt;
}

inline std::string join(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

// The parameter and buffer names a TorchScript class declares in its code file
// (`__parameters__ = ["weight", "bias", ]`), so plain tensor attributes can be told apart.
struct ClassInfo {
  bool known = false;
  std::vector<std::string> parameters;
  std::vector<std::string> buffers;
};

inline std::vector<std::string> quoted_strings(std::string_view list) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while ((i = list.find('"', i)) != std::string_view::npos) {
    const std::size_t end = list.find('"', i + 1);
    if (end == std::string_view::npos) break;
    out.emplace_back(list.substr(i + 1, end - i - 1));
    i = end + 1;
  }
  return out;
}

inline ClassInfo parse_class_info(std::string_view code, std::string_view class_name) {
  ClassInfo info;
  const std::string header = "class " + std::string(class_name) + "(";
  std::size_t at = 0;
  while (true) {
    at = code.find(header, at);
    if (at == std::string_view::npos) return info;
    if (at == 0 || code[at - 1] == '\n') break;
    at += header.size();
  }
  // The class body is the following indented lines.
  std::size_t line = code.find('\n', at);
  while (line != std::string_view::npos && line + 1 < code.size()) {
    const std::size_t start = line + 1;
    std::size_t end = code.find('\n', start);
    if (end == std::string_view::npos) end = code.size();
    const std::string_view text = code.substr(start, end - start);
    if (!text.empty() && text[0] != ' ') break;
    auto field = [&](std::string_view name, std::vector<std::string>& into) {
      const std::size_t p = text.find(name);
      if (p == std::string_view::npos || text.find_first_not_of(' ') != p) return;
      const std::size_t open = code.find('[', start + p);
      const std::size_t close = open == std::string_view::npos ? open : code.find(']', open);
      if (close == std::string_view::npos) return;
      into = quoted_strings(code.substr(open, close - open));
      info.known = true;
    };
    field("__parameters__ = ", info.parameters);
    field("__buffers__ = ", info.buffers);
    line = end < code.size() ? end : std::string_view::npos;
  }
  return info;
}

class Reader {
 public:
  Reader(TensorArchive& out, const TorchReadOptions& options) : out_(out), options_(options) {}

  void run() {
    const auto bytes = out_.file_bytes();
    const std::string& what = out_.path();
    if (is_legacy_format(bytes))
      fail(what, ": legacy PyTorch serialization (torch < 1.6, or saved with _use_new_zipfile_serialization=False), "
                 "which is not supported; re-save it with torch >= 1.6: torch.save(torch.load(path), new_path)");
    require(zip::has_signature(bytes), what, ": not a PyTorch checkpoint (no zip signature)");
    zip_.emplace(bytes, what);
    find_prefix();

    if (const ZipEntry* order = zip_->find(prefix_ + "byteorder")) {
      const auto data = zip_->read(*order);
      require(data.text() == "little", what, ": checkpoint was written on a '", data.text().substr(0, 16),
              "'-endian machine; only little-endian checkpoints are supported");
    }
    const std::string pkl_name = prefix_ + "data.pkl";
    pkl_what_ = what + ": " + pkl_name;
    const ZipEntry& pkl_entry = zip_->get(pkl_name);
    require(pkl_entry.uncompressed_size <= options_.max_pickle_bytes, what, ": ", pkl_name, " is ",
            pkl_entry.uncompressed_size, " bytes, more than any real checkpoint's; the file is corrupt");
    // The pickle decides every tensor's shape and storage, and is small: always check its CRC.
    const auto pkl = zip_->read(pkl_entry, true);
    const pickle::Document doc = pickle::parse(pkl.bytes(), pkl_what_, options_.pickle_limits);
    torchscript_ = zip_->find(prefix_ + "constants.pkl") != nullptr || is_torchscript_object(doc.root());
    out_.set_format(torchscript_ ? "torchscript" : "torch.save");
    // Memoized values may be shared, so a walk can meet one several times (tied weights); a
    // crafted pickle sharing at every level would multiply the walk exponentially.
    walk_budget_ = 16 * doc.value_count() + 1024;
    // Likewise a memoized string costs its bytes once in the pickle but is copied into every name
    // and metadata entry that reaches it; real checkpoints stay far below this.
    text_budget_ = 64 * pkl.size() + (std::size_t{1} << 20);
    walk(doc.root(), "", 0, true);
    require(!out_.empty(), what, ": no tensors found in ", pkl_name, " (the root is ", pickle::repr(doc.root(), 80), ")");
  }

  bool torchscript() const { return torchscript_; }

 private:
  // torch names every entry <prefix>/...; the prefix is the first entry's directory (what
  // PyTorch's own reader does), usually 'archive' or the file's stem.
  void find_prefix() {
    const std::string& what = out_.path();
    require(!zip_->entries().empty(), what, ": zip archive is empty, not a PyTorch checkpoint");
    const std::string& first = zip_->entries().front().name;
    const std::size_t slash = first.find('/');
    require(slash != std::string::npos, what, ": zip entry '", first, "' is not inside a directory; not a PyTorch checkpoint");
    prefix_ = first.substr(0, slash + 1);
    require(zip_->find(prefix_ + "data.pkl") != nullptr, what, ": archive has no ", prefix_,
            "data.pkl; it is a zip file but not a PyTorch checkpoint");
  }

  // ---- tensors ------------------------------------------------------------------------------
  static bool is_tensor_call(const pickle::Value& v) {
    if (v.kind != pickle::Kind::Object || !v.callable || v.callable->kind != pickle::Kind::Global) return false;
    const std::string& module = v.callable->text;
    const std::string& name = v.callable->name;
    if (module == "torch._utils") return name.rfind("_rebuild_", 0) == 0;
    return module == "torch._tensor" && name.rfind("_rebuild_from_type", 0) == 0;
  }

  [[noreturn]] void bad_tensor(const std::string& name, std::string_view problem) const {
    fail(pkl_what_, ": tensor '", name, "' ", problem);
  }

  const pickle::Value& arg(const std::vector<const pickle::Value*>& args, std::size_t i, const std::string& name) const {
    if (i >= args.size()) bad_tensor(name, "has too few rebuild arguments");
    return *args[i];
  }

  std::vector<std::int64_t> int_tuple(const pickle::Value& v, const std::string& name, std::string_view field) const {
    if (!v.is_sequence()) bad_tensor(name, std::string(field) + " is not a tuple");
    std::vector<std::int64_t> out;
    for (const pickle::Value* item : v.items) {
      if (!item->is_int()) bad_tensor(name, std::string(field) + " holds a non-integer");
      out.push_back(item->integer);
    }
    return out;
  }

  StoredTensor decode_tensor(const pickle::Value& call, const std::string& name, std::size_t depth) {
    if (depth > 8) bad_tensor(name, "is wrapped too deeply");
    const std::string& fn = call.callable->name;
    const auto& args = call.args->items;
    if (fn == "_rebuild_parameter" || fn == "_rebuild_parameter_with_state") {
      const pickle::Value& inner = arg(args, 0, name);
      if (!is_tensor_call(inner)) bad_tensor(name, "is a parameter whose data is not a tensor");
      return decode_tensor(inner, name, depth + 1);
    }
    if (fn.rfind("_rebuild_from_type", 0) == 0) {
      // _rebuild_from_type_v2(func, new_type, args, state): a tensor subclass; func(*args) is the tensor.
      const pickle::Value& func = arg(args, 0, name);
      const pickle::Value& func_args = arg(args, 2, name);
      if (func.kind != pickle::Kind::Global || func_args.kind != pickle::Kind::Tuple)
        bad_tensor(name, "has an unexpected _rebuild_from_type call");
      pickle::Value synthetic;
      synthetic.kind = pickle::Kind::Object;
      synthetic.callable = &func;
      synthetic.args = &func_args;
      if (!is_tensor_call(synthetic)) bad_tensor(name, "is rebuilt by " + func.qualified_name() + ", which is not supported");
      return decode_tensor(synthetic, name, depth + 1);
    }
    const bool v1 = fn == "_rebuild_tensor";
    const bool v2 = fn == "_rebuild_tensor_v2";
    const bool v3 = fn == "_rebuild_tensor_v3";
    if (!v1 && !v2 && !v3) {
      if (fn.find("qtensor") != std::string::npos) bad_tensor(name, "is a quantized tensor, which is not supported");
      bad_tensor(name, "is rebuilt by torch._utils." + fn + " (sparse, nested or device-specific tensors are not supported)");
    }
    StoredTensor t;
    t.name = name;
    DType storage_dtype{};
    t.storage = storage(arg(args, 0, name), name, storage_dtype);
    const pickle::Value& offset = arg(args, 1, name);
    if (!offset.is_int()) bad_tensor(name, "has a non-integer storage offset");
    t.offset = offset.integer;
    t.shape = int_tuple(arg(args, 2, name), name, "size");
    t.strides = int_tuple(arg(args, 3, name), name, "stride");
    t.dtype = storage_dtype;
    if (v3) {
      const pickle::Value& dtype = arg(args, 6, name);
      const auto d = dtype.kind == pickle::Kind::Global && dtype.text == "torch" ? dtype_from_name(dtype.name) : std::nullopt;
      if (!d) bad_tensor(name, "has dtype " + pickle::repr(dtype, 40) + ", which is not supported");
      t.dtype = *d;
    }
    return t;
  }

  // Resolves ('storage', <type>, key, location, numel) to the bytes of <prefix>/data/<key>.
  std::span<const std::byte> storage(const pickle::Value& ref, const std::string& name, DType& dtype) {
    if (ref.kind != pickle::Kind::PersistentId || ref.items.empty()) bad_tensor(name, "does not refer to a storage");
    const pickle::Value& pid = *ref.items[0];
    if (pid.kind != pickle::Kind::Tuple || pid.items.size() < 5 || !pid.items[0]->is_string() || pid.items[0]->text != "storage")
      bad_tensor(name, "has an unexpected persistent id " + pickle::repr(pid, 80));
    const pickle::Value& type = *pid.items[1];
    const pickle::Value& key = *pid.items[2];
    const pickle::Value& numel = *pid.items[4];
    std::optional<DType> d;
    if (type.kind == pickle::Kind::Global && (type.text == "torch" || type.text == "torch.storage")) {
      d = dtype_from_storage_name(type.name);
      if (!d && type.text == "torch") d = dtype_from_name(type.name);  // dtype objects stand in for storage types
    }
    if (!d) bad_tensor(name, "has storage type " + pickle::repr(type, 60) + ", which is not supported");
    if (!key.is_string()) bad_tensor(name, "has a storage key that is not a string");
    if (!numel.is_int() || numel.integer < 0) bad_tensor(name, "has an invalid storage size");
    dtype = *d;
    std::int64_t nbytes = 0;
    if (detail::mul_overflows(numel.integer, static_cast<std::int64_t>(dtype_size(*d)), nbytes))
      bad_tensor(name, "has a storage size that overflows");

    std::span<const std::byte> data;
    auto cached = storages_.find(key.text);
    if (cached != storages_.end()) {
      data = cached->second;
    } else {
      const std::string entry_name = prefix_ + "data/" + key.text;
      const ZipEntry* entry = zip_->find(entry_name);
      if (!entry) bad_tensor(name, "refers to storage '" + key.text + "' but the archive has no entry " + entry_name);
      ZipEntryData bytes = zip_->read(*entry, options_.verify_crc);
      data = bytes.is_owned() ? out_.adopt(bytes.release_buffer()) : bytes.bytes();
      storages_.emplace(key.text, data);
    }
    if (static_cast<std::uint64_t>(nbytes) > data.size())
      bad_tensor(name, "needs " + std::to_string(nbytes) + " bytes of storage '" + key.text + "' but the entry has " +
                           std::to_string(data.size()) + "; the file is truncated or corrupt");
    return data.first(static_cast<std::size_t>(nbytes));
  }

  void emit(const pickle::Value& call, const std::string& name) {
    if (name.empty()) fail(pkl_what_, ": the checkpoint is a single tensor without a name");
    out_.add(decode_tensor(call, name, 0));
  }

  // ---- walking the object tree ----------------------------------------------------------------
  static std::optional<std::string> key_text(const pickle::Value& k) {
    if (k.kind == pickle::Kind::String) return k.text;
    if (k.kind == pickle::Kind::Int) return std::to_string(k.integer);
    return std::nullopt;
  }

  static bool is_torchscript_object(const pickle::Value& v) {
    return v.kind == pickle::Kind::Object && v.callable && v.callable->kind == pickle::Kind::Global &&
           v.callable->text.rfind("__torch__", 0) == 0;
  }

  // The name of a child of `prefix`, counted against the text budget.
  std::string child_name(const std::string& prefix, std::string_view key) {
    std::string name = join(prefix, key);
    charge_text(name.size());
    return name;
  }
  void charge_text(std::size_t bytes) {
    if (bytes > text_budget_)
      fail(pkl_what_, ": the object graph repeats its strings so often that its tensor names and metadata would not fit in "
                      "memory");
    text_budget_ -= bytes;
  }

  void check_depth(std::size_t depth) {
    if (depth > kMaxNesting) fail(pkl_what_, ": objects nest deeper than ", kMaxNesting, " levels");
    if (walk_budget_-- == 0) fail(pkl_what_, ": the object graph shares values so often that walking it would not end");
  }

  // Generic walk: dicts, lists and tuples by key or index; scalars beside tensors become metadata.
  void walk(const pickle::Value& v, const std::string& name, std::size_t depth, bool record_scalars) {
    check_depth(depth);
    if (is_tensor_call(v)) {
      emit(v, name);
      return;
    }
    switch (v.kind) {
      case pickle::Kind::Dict:
        for (const auto& [k, item] : v.entries) {
          const auto key = key_text(*k);
          if (key) walk(*item, child_name(name, *key), depth + 1, record_scalars);
        }
        return;
      case pickle::Kind::List:
      case pickle::Kind::Tuple:
        for (std::size_t i = 0; i < v.items.size(); ++i)
          walk(*v.items[i], child_name(name, std::to_string(i)), depth + 1, record_scalars);
        return;
      case pickle::Kind::Object:
        walk_object(v, name, depth);
        return;
      case pickle::Kind::Int:
        if (record_scalars && !name.empty()) out_.add_metadata(name, std::to_string(v.integer));
        return;
      case pickle::Kind::Float:
        if (record_scalars && !name.empty()) out_.add_metadata(name, json_number(v.real));
        return;
      case pickle::Kind::Bool:
        if (record_scalars && !name.empty()) out_.add_metadata(name, v.boolean ? "true" : "false");
        return;
      case pickle::Kind::String:
        if (record_scalars && !name.empty()) {
          charge_text(v.text.size());
          out_.add_metadata(name, v.text);
        }
        return;
      default: return;
    }
  }

  static std::string json_number(double d) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof(buf), d);
    return std::string(buf, r.ptr);
  }

  void walk_object(const pickle::Value& v, const std::string& name, std::size_t depth) {
    if (is_torchscript_object(v)) {
      walk_script_module(v, name, depth);
      return;
    }
    if (v.state && v.state->kind == pickle::Kind::Dict && v.state->find("_parameters") && v.state->find("_modules")) {
      walk_nn_module(*v.state, name, depth);
      return;
    }
    // TorchScript's typed containers: torch.jit._pickle.build_tensorlist([...]) and friends.
    if (v.callable && v.callable->kind == pickle::Kind::Global && v.callable->text == "torch.jit._pickle" && v.args &&
        !v.args->items.empty()) {
      walk(*v.args->items[0], name, depth + 1, false);
      return;
    }
    // Other objects (argparse.Namespace, optimizer classes, ...) cannot be interpreted; skipped.
  }

  // A pickled nn.Module (torch.save(model)): its __dict__ holds _parameters, _buffers, _modules.
  void walk_nn_module(const pickle::Value& state, const std::string& name, std::size_t depth) {
    check_depth(depth);
    std::set<std::string> non_persistent;
    if (const pickle::Value* np = state.find("_non_persistent_buffers_set")) {
      const pickle::Value* list = np;
      if (np->kind == pickle::Kind::Object && np->args && !np->args->items.empty()) list = np->args->items[0];
      for (const pickle::Value* item : list->items)
        if (item->is_string()) non_persistent.insert(item->text);
    }
    auto tensors = [&](std::string_view field, bool skip_non_persistent) {
      const pickle::Value* dict = state.find(field);
      if (!dict || dict->kind != pickle::Kind::Dict) return;
      for (const auto& [k, item] : dict->entries) {
        if (!k->is_string() || item->is_none()) continue;
        if (skip_non_persistent && non_persistent.count(k->text)) continue;
        if (is_tensor_call(*item)) emit(*item, child_name(name, k->text));
      }
    };
    tensors("_parameters", false);
    tensors("_buffers", true);
    if (const pickle::Value* modules = state.find("_modules"); modules && modules->kind == pickle::Kind::Dict) {
      for (const auto& [k, item] : modules->entries) {
        if (!k->is_string() || item->is_none()) continue;
        if (item->kind == pickle::Kind::Object && item->state && item->state->kind == pickle::Kind::Dict)
          walk_nn_module(*item->state, child_name(name, k->text), depth + 1);
      }
    }
  }

  const ClassInfo& class_info(const pickle::Value& cls) {
    const std::string qualified = cls.qualified_name();
    auto it = classes_.find(qualified);
    if (it != classes_.end()) return it->second;
    ClassInfo info;
    std::string path = cls.text;
    std::replace(path.begin(), path.end(), '.', '/');
    path = prefix_ + "code/" + path + ".py";
    auto file = code_files_.find(path);
    if (file == code_files_.end()) {
      std::string text;
      if (const ZipEntry* code = zip_->find(path)) text = std::string(zip_->read(*code).text());
      file = code_files_.emplace(path, std::move(text)).first;
    }
    if (!file->second.empty()) info = parse_class_info(file->second, cls.name);
    return classes_.emplace(qualified, std::move(info)).first->second;
  }

  // A TorchScript module: an object of class __torch__.<...> whose BUILD state maps attribute
  // names to parameters, buffers, submodules and plain values. Emitted in state_dict order.
  void walk_script_module(const pickle::Value& v, const std::string& name, std::size_t depth) {
    check_depth(depth);
    if (!v.state || v.state->kind != pickle::Kind::Dict) return;  // a custom __setstate__ we cannot interpret
    const ClassInfo& info = class_info(*v.callable);
    auto listed = [](const std::vector<std::string>& names, const std::string& n) {
      return std::find(names.begin(), names.end(), n) != names.end();
    };
    enum Pass { Parameters, Buffers, Others };
    for (Pass pass : {Parameters, Buffers, Others}) {
      for (const auto& [k, item] : v.state->entries) {
        if (!k->is_string() || !is_tensor_call(*item)) continue;
        const bool is_param = info.known && listed(info.parameters, k->text);
        const bool is_buffer = info.known && !is_param && listed(info.buffers, k->text);
        const Pass kind = !info.known ? Others : is_param ? Parameters : is_buffer ? Buffers : Others;
        if (kind != pass) continue;
        if (info.known && kind == Others && !options_.include_attributes) continue;
        emit(*item, child_name(name, k->text));
      }
    }
    for (const auto& [k, item] : v.state->entries) {
      if (!k->is_string() || is_tensor_call(*item)) continue;
      if (is_torchscript_object(*item)) {
        walk_script_module(*item, child_name(name, k->text), depth + 1);
      } else if (options_.include_attributes) {
        walk(*item, child_name(name, k->text), depth + 1, false);
      }
    }
  }

  TensorArchive& out_;
  const TorchReadOptions& options_;
  std::optional<ZipArchive> zip_;
  std::string prefix_;
  std::string pkl_what_;
  bool torchscript_ = false;
  std::size_t walk_budget_ = 0;
  std::size_t text_budget_ = 0;
  std::map<std::string, std::span<const std::byte>> storages_;
  std::map<std::string, ClassInfo> classes_;
  std::map<std::string, std::string> code_files_;  // several classes may share one code file
};

inline TensorArchive read(TensorArchive archive, const TorchReadOptions& options) {
  Reader reader(archive, options);
  reader.run();
  return archive;
}

}  // namespace torch_detail

// Reads a torch.save or torch.jit.save checkpoint. format() is "torch.save" or "torchscript".
inline TensorArchive read_torch_archive(const std::string& path, const TorchReadOptions& options = {}) {
  TensorArchive archive(MappedFile(path), "torch.save");
  return torch_detail::read(std::move(archive), options);
}

// The same for a checkpoint already in memory; `name` appears in error messages.
inline TensorArchive read_torch_archive(std::vector<std::byte> bytes, std::string name, const TorchReadOptions& options = {}) {
  TensorArchive archive(std::move(bytes), std::move(name), "torch.save");
  return torch_detail::read(std::move(archive), options);
}

}  // namespace focuspatch
