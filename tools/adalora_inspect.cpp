// adalora-inspect: says what an adapter folder, allocator checkpoint or safetensors file holds, without a trainer.
//
//   adalora-inspect PATH...
//
// PATH is one of
//   - a PEFT adapter folder (adapter_config.json + adapter_model.safetensors): AdaLoRA (as io/peft_adapter.hpp or
//     PEFT's save_pretrained writes it) — the config, then per module its shape, kept rank of init_r and the range of
//     |λ|; or plain LoRA (io::write_peft_lora, PEFT's LoRA) — the config, then per module its shape and rank;
//   - an allocator checkpoint (io/allocator_checkpoint.hpp) — the config, metric, schedule, progress, and per adapter
//     its shape and the rank its latest selection keeps;
//   - any other safetensors file (e.g. a PEFT trace) — its metadata keys and every tensor's dtype and shape.
// Every file is read whole and checked as the library reads it: a malformed one is reported, and the exit status is
// 1 (0 when every path was read, 2 on a usage error).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "adalora/io/allocator_checkpoint.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "adalora/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using namespace adalora;

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// Rows printed as aligned columns, indented: the first column left-aligned, the others right-aligned.
class table {
public:
  explicit table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print() const {
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
      std::cout << line << "\n";
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

void print_schedule(const adalora_config& c) {
  std::cout << "  config: init_r " << c.init_r << ", target_r " << c.target_r << ", tinit " << c.tinit << ", tfinal "
            << c.tfinal << ", deltaT " << c.deltaT << ", total_step " << c.total_step << ", beta1 " << number(c.beta1)
            << ", beta2 " << number(c.beta2) << ", orth_reg_weight " << number(c.orth_reg_weight) << ", lora_alpha "
            << number(c.lora_alpha) << ", lora_dropout " << number(c.lora_dropout) << "\n";
}

void inspect_peft_adalora(const fs::path& dir) {
  const io::peft_adalora_checkpoint ck = io::read_peft_adalora(dir);
  std::size_t kept = 0, created = 0, parameters = 0;
  for (const auto& m : ck.modules) {
    kept += m.rank();
    created += m.init_r;
    parameters += m.A.size() + m.E.size() + m.B.size();
  }
  std::cout << dir.string() << ": PEFT AdaLoRA adapter, " << ck.modules.size() << " modules\n";
  print_schedule(ck.config);
  std::cout << "  scaling " << number(io::peft_adalora_scaling(ck.config.lora_alpha, ck.config.init_r))
            << ", rank kept " << kept << " of " << created << " created (init_r × modules), " << parameters
            << " parameters\n";
  if (ck.base_model_name_or_path) std::cout << "  base model: " << *ck.base_model_name_or_path << "\n";
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
  t.print();
}

/// A plain-LoRA folder: the config's rank and alpha, and the modules found from the tensor names, each checked for
/// both halves and agreeing shapes.
void inspect_peft_lora(const fs::path& dir, const nlohmann::json& config) {
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
    if (!t.name.starts_with(prefix) || !(is_a || is_b) || t.shape.size() != 2)
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
  std::cout << dir.string() << ": PEFT LoRA adapter, " << modules.size() << " modules\n";
  std::cout << "  config: r " << config.value("r", nlohmann::json()).dump() << ", lora_alpha "
            << config.value("lora_alpha", nlohmann::json()).dump() << ", rank_pattern "
            << config.value("rank_pattern", nlohmann::json()).dump() << "\n";
  std::cout << "  rank " << rank << " over all modules, " << parameters << " parameters\n";
  table t({"module", "in", "out", "rank", "dtype"});
  for (const auto& [name, m] : modules)
    t.add({name, std::to_string(m.a->shape[1]), std::to_string(m.b->shape[0]), std::to_string(m.a->shape[0]),
           std::string(io::dtype_name(m.a->type))});
  t.print();
}

void inspect_folder(const fs::path& dir) {
  // the library's reader of a PEFT folder's text files (its checks and messages for missing or oversized files)
  const std::string text = io::detail::peft_read_text(dir, io::peft_config_file);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw format_error((dir / io::peft_config_file).string() + ": not JSON: " + e.what());
  }
  const std::string type = config.is_object() ? config.value("peft_type", std::string()) : std::string();
  if (type == "ADALORA") return inspect_peft_adalora(dir);
  if (type == "LORA") return inspect_peft_lora(dir, config);
  throw format_error((dir / io::peft_config_file).string() + ": peft_type '" + type +
                     "'; adalora-inspect reads ADALORA and LORA adapters");
}

void inspect_checkpoint(const io::safetensors_file& f) {
  const allocator_state s = io::read_allocator_checkpoint(f);
  std::cout << f.source() << ": allocator checkpoint (" << io::allocator_checkpoint_format << "), " << s.adapters.size()
            << " adapters\n";
  print_schedule(s.config);
  std::cout << "  metric " << s.metric << ", schedule " << s.schedule << ", last step "
            << (s.last_step ? std::to_string(*s.last_step) : std::string("none")) << ", budget " << s.budget
            << ", threshold " << (s.threshold ? number(*s.threshold) : std::string("none"))
            << (s.frozen ? ", final pattern fixed" : "") << (s.importance_live ? ", importance state saved" : "")
            << "\n";
  table t({"adapter", "in", "out", "kept/r"});
  std::size_t offset = 0;
  for (const auto& a : s.adapters) {
    std::string kept = std::to_string(a.r) + "/" + std::to_string(a.r) + " (no selection yet)";
    if (!s.keep.empty()) {
      const auto first = s.keep.begin() + static_cast<std::ptrdiff_t>(offset);
      kept = std::to_string(std::count(first, first + static_cast<std::ptrdiff_t>(a.r), std::uint8_t{1})) + "/" +
             std::to_string(a.r);
    }
    t.add({a.name, std::to_string(a.in), std::to_string(a.out), kept});
    offset += a.r;
  }
  t.print();
}

void inspect_file(const fs::path& path) {
  const auto f = io::safetensors_file::open(path);
  const auto format = f.metadata().find("format");
  if (format != f.metadata().end() && format->second == io::allocator_checkpoint_format) return inspect_checkpoint(f);
  std::size_t elements = 0;
  for (const auto& t : f.tensors()) elements += t.numel();
  std::cout << f.source() << ": safetensors, " << f.tensors().size() << " tensors, " << elements << " elements\n";
  if (!f.metadata().empty()) {
    std::cout << "  metadata:";
    for (const auto& [key, value] : f.metadata())
      std::cout << " " << key << (format != f.metadata().end() && key == "format" ? " = " + value : "");
    std::cout << "\n";
  }
  table listing({"tensor", "dtype", "shape"});
  for (const auto& t : f.tensors()) listing.add({t.name, std::string(io::dtype_name(t.type)), shape_text(t.shape)});
  listing.print();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view usage =
      "usage: adalora-inspect PATH...\n"
      "  PATH: a PEFT adapter folder (AdaLoRA or LoRA), an allocator checkpoint, or any .safetensors file\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  int status = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << usage;
      return 0;
    }
    try {
      const fs::path path(arg);
      if (fs::is_directory(path))
        inspect_folder(path);
      else
        inspect_file(path);
    } catch (const std::exception& e) {
      std::cerr << "adalora-inspect: " << e.what() << "\n";
      status = 1;
    }
  }
  return status;
}
