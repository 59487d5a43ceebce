// adalora-inspect's readers, as functions that print to any stream: the tool's main() and the fuzz targets call them.
//
// inspect(PATH, out) prints what PATH holds:
//   - a PEFT adapter folder (adapter_config.json + adapter_model.safetensors): AdaLoRA (as io/peft_adapter.hpp or
//     PEFT's save_pretrained writes it) — the config, then per module its shape, kept rank of init_r and the range of
//     |λ|; or plain LoRA (io::write_peft_lora, PEFT's LoRA) — the config, then per module its shape and rank;
//   - an allocator checkpoint (io/allocator_checkpoint.hpp) — the config, metric, schedule, progress, and per adapter
//     its shape and the rank its latest selection keeps;
//   - any other safetensors file (e.g. a PEFT trace) — its metadata keys and every tensor's dtype and shape.
// Every file is read whole and checked as the library reads it; a malformed one throws adalora::error (format_error
// saying what is wrong), never anything else: sizes come from the library's readers, which check them against the
// file, and values from outside are described, never printed whole.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "adalora/io/allocator_checkpoint.hpp"
#include "adalora/io/bounded_json.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "adalora/io/safetensors.hpp"

namespace adalora::tools::inspect_detail {


namespace fs = std::filesystem;

inline std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// Rows printed as aligned columns, indented: the first column left-aligned, the others right-aligned.
class table {
public:
  explicit table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out) const {
    std::vector<std::size_t> width(rows_.front().size(), 0);
    for (const auto& row : rows_)
      for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], text_width(row[c]));
    for (const auto& row : rows_) {
      std::string line = "   ";
      for (std::size_t c = 0; c < row.size(); ++c) {
        const std::string pad(width[c] - text_width(row[c]), ' ');
        line += c == 0 ? " " + row[c] + pad : "  " + pad + row[c];
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out << line << "\n";
    }
  }

private:
  /// Characters as the terminal shows them: UTF-8 continuation bytes take no column.
  static std::size_t text_width(const std::string& s) {
    return static_cast<std::size_t>(
        std::count_if(s.begin(), s.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0u) != 0x80u; }));
  }
  std::vector<std::vector<std::string>> rows_;
};

inline void print_schedule(const adalora_config& c, std::ostream& out) {
  out << "  config: init_r " << c.init_r << ", target_r " << c.target_r << ", tinit " << c.tinit << ", tfinal "
            << c.tfinal << ", deltaT " << c.deltaT << ", total_step " << c.total_step << ", beta1 " << number(c.beta1)
            << ", beta2 " << number(c.beta2) << ", orth_reg_weight " << number(c.orth_reg_weight) << ", lora_alpha "
            << number(c.lora_alpha) << ", lora_dropout " << number(c.lora_dropout) << "\n";
}

inline void inspect_peft_adalora(const fs::path& dir, std::ostream& out) {
  const io::peft_adalora_checkpoint ck = io::read_peft_adalora(dir);
  std::size_t kept = 0, created = 0, parameters = 0;
  for (const auto& m : ck.modules) {
    kept += m.rank();
    created += m.init_r;
    parameters += m.A.size() + m.E.size() + m.B.size();
  }
  out << dir.string() << ": PEFT AdaLoRA adapter, " << ck.modules.size() << " modules\n";
  print_schedule(ck.config, out);
  out << "  scaling " << number(io::peft_adalora_scaling(ck.config.lora_alpha, ck.config.init_r))
            << ", rank kept " << kept << " of " << created << " created (init_r × modules), " << parameters
            << " parameters\n";
  if (ck.base_model_name_or_path) out << "  base model: " << *ck.base_model_name_or_path << "\n";
  table t({"module", "in", "out", "rank/init_r", "|λ| min", "|λ| max"});
  for (const auto& m : ck.modules) {
    std::string lo = "-", hi = "-";
    if (!m.E.empty()) {
      const auto [a, b] =
          std::minmax_element(m.E.begin(), m.E.end(), [](float x, float y) { return std::fabs(x) < std::fabs(y); });
      lo = number(std::fabs(*a));
      hi = number(std::fabs(*b));
    }
    t.add({m.name, std::to_string(m.in_features), std::to_string(m.out_features),
           std::to_string(m.rank()) + "/" + std::to_string(m.init_r), lo, hi});
  }
  t.print(out);
}

/// A plain-LoRA folder: the config's rank and alpha, and the modules found from the tensor names, each checked for
/// both halves and agreeing shapes.
inline void inspect_peft_lora(const fs::path& dir, const nlohmann::json& config, std::ostream& out) {
  const auto weights = io::safetensors_file::open(dir / io::peft_weights_file);
  struct halves {
    const io::tensor_info* a = nullptr;
    const io::tensor_info* b = nullptr;
  };
  std::map<std::string, halves> modules;
  const std::string prefix(io::peft_key_prefix);
  for (const auto& t : weights.tensors()) {
    constexpr std::string_view a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";  // the same length
    const bool is_a = t.name.ends_with(a_suffix), is_b = t.name.ends_with(b_suffix);
    if (!t.name.starts_with(prefix) || !(is_a || is_b) || t.name.size() <= prefix.size() + a_suffix.size() ||
        t.shape.size() != 2)
      throw format_error(weights.source() + ": tensor '" + t.name + "' " + shape_text(t.shape) +
                         " is not a LoRA weight (" + prefix + "<module>.lora_A.weight or .lora_B.weight, 2-D)");
    const std::string module = t.name.substr(prefix.size(), t.name.size() - prefix.size() - a_suffix.size());
    (is_a ? modules[module].a : modules[module].b) = &t;
  }
  std::size_t parameters = 0, rank = 0;
  for (const auto& [name, m] : modules) {
    if (!m.a || !m.b)
      throw format_error(weights.source() + ": module '" + name + "' has lora_" + (m.a ? "A" : "B") + " but no lora_" +
                         (m.a ? "B" : "A"));
    if (m.a->shape[0] != m.b->shape[1])
      throw format_error(weights.source() + ": module '" + name + "': lora_A " + shape_text(m.a->shape) +
                         " and lora_B " + shape_text(m.b->shape) + " disagree on the rank");
    parameters += m.a->numel() + m.b->numel();
    rank += m.a->shape[0];
  }
  out << dir.string() << ": PEFT LoRA adapter, " << modules.size() << " modules\n";
  // values from outside are described, never printed whole
  auto field = [&](std::string_view key) {
    const nlohmann::json* v = io::json_find(config, key);
    return v == nullptr ? std::string("missing") : v->is_number() ? v->dump() : io::describe_json(*v);
  };
  const nlohmann::json* patterns = io::json_find(config, "rank_pattern");
  out << "  config: r " << field("r") << ", lora_alpha " << field("lora_alpha") << ", rank_pattern "
            << (patterns == nullptr || patterns->is_null() ? std::string("null")
                : patterns->is_object()                    ? std::to_string(patterns->size()) + " modules"
                                                           : io::describe_json(*patterns))
            << "\n";
  out << "  rank " << rank << " over all modules, " << parameters << " parameters\n";
  table t({"module", "in", "out", "rank", "dtype"});
  for (const auto& [name, m] : modules)
    t.add({name, std::to_string(m.a->shape[1]), std::to_string(m.b->shape[0]), std::to_string(m.a->shape[0]),
           std::string(io::dtype_name(m.a->type))});
  t.print(out);
}

inline void inspect_folder(const fs::path& dir, std::ostream& out) {
  // the library's reader of a PEFT folder's text files (its checks and messages for missing or oversized files)
  const std::string text = io::detail::peft_read_text(dir, io::peft_config_file);
  const std::string what = (dir / io::peft_config_file).string();
  // the fields printed here; the others are read as JSON (within io::parse_json's limits) but not kept
  static constexpr std::string_view fields[] = {"peft_type", "r", "lora_alpha", "rank_pattern"};
  const nlohmann::json config = io::parse_json(text, what, fields);
  if (!config.is_object()) throw format_error(what + " is " + io::describe_json(config) + ", not a JSON object");
  const nlohmann::json* type_field = io::json_find(config, "peft_type");
  const std::string type = type_field == nullptr ? std::string() : io::json_string(*type_field, what + ": peft_type");
  if (type == "ADALORA") return inspect_peft_adalora(dir, out);
  if (type == "LORA") return inspect_peft_lora(dir, config, out);
  throw format_error(what + ": peft_type '" + io::detail::clip_text(type) +
                     "'; adalora-inspect reads ADALORA and LORA adapters");
}

inline void inspect_checkpoint(const io::safetensors_file& f, std::ostream& out) {
  const allocator_state s = io::read_allocator_checkpoint(f);
  out << f.source() << ": allocator checkpoint (" << io::allocator_checkpoint_format << "), " << s.adapters.size()
            << " adapters\n";
  print_schedule(s.config, out);
  out << "  metric " << s.metric << ", schedule " << s.schedule << ", last step "
            << (s.last_step ? std::to_string(*s.last_step) : std::string("none")) << ", budget " << s.budget
            << ", threshold " << (s.threshold ? number(*s.threshold) : std::string("none"))
            << (s.frozen ? ", final pattern fixed" : "") << (s.importance_live ? ", importance state saved" : "")
            << "\n";
  table t({"adapter", "in", "out", "kept/r"});
  std::size_t offset = 0;
  for (const auto& a : s.adapters) {
    std::string kept = std::to_string(a.r) + "/" + std::to_string(a.r) + " (no selection yet)";
    // read_allocator_checkpoint checked that keep holds Σ r entries (or none); checked again, as a file is untrusted
    if (!s.keep.empty() && (a.r > s.keep.size() || offset > s.keep.size() - a.r))
      throw format_error(f.source() + ": the rank pattern is shorter than the adapters' ranks");
    if (!s.keep.empty()) {
      const auto first = s.keep.begin() + static_cast<std::ptrdiff_t>(offset);
      kept = std::to_string(std::count(first, first + static_cast<std::ptrdiff_t>(a.r), std::uint8_t{1})) + "/" +
             std::to_string(a.r);
    }
    t.add({a.name, std::to_string(a.in), std::to_string(a.out), kept});
    offset += a.r;
  }
  t.print(out);
}

inline void inspect_file(const fs::path& path, std::ostream& out) {
  const auto f = io::safetensors_file::open(path);
  const auto format = f.metadata().find("format");
  if (format != f.metadata().end() && format->second == io::allocator_checkpoint_format) return inspect_checkpoint(f, out);
  std::size_t elements = 0;
  for (const auto& t : f.tensors()) elements += t.numel();
  out << f.source() << ": safetensors, " << f.tensors().size() << " tensors, " << elements << " elements\n";
  if (!f.metadata().empty()) {
    out << "  metadata:";
    for (const auto& [key, value] : f.metadata())
      out << " " << key << (format != f.metadata().end() && key == "format" ? " = " + value : "");
    out << "\n";
  }
  table listing({"tensor", "dtype", "shape"});
  for (const auto& t : f.tensors()) listing.add({t.name, std::string(io::dtype_name(t.type)), shape_text(t.shape)});
  listing.print(out);
}

}  // namespace adalora::tools::inspect_detail

namespace adalora::tools {

/// Prints what the folder or file at `path` holds (see the top of this file); throws adalora::error when it is
/// missing or malformed.
inline void inspect(const std::filesystem::path& path, std::ostream& out) {
  if (std::filesystem::is_directory(path))
    inspect_detail::inspect_folder(path, out);
  else
    inspect_detail::inspect_file(path, out);
}

}  // namespace adalora::tools
