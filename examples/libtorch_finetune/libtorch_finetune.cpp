// libtorch_finetune: AdaLoRA from a libtorch trainer. A frozen transformer encoder (torch::nn) is fine-tuned through
// adalora::libtorch::SVDLinear adapters with libtorch's AdamW, the orthogonal regularizer and the rank allocator, on
// a task whose needed rank per matrix is known; it prints the loss, the budget and the ranks as it goes, ends with
// the kept ranks beside the true ones, and exports the adapter in PEFT's format.
//
// The task (as examples/budget_study, smaller): a teacher network equals the frozen base network except for a
// planted low-rank change W + Σ_k σ_k u_k v_kᵀ in some of its matrices, of a different rank in each. The student
// learns the teacher's outputs (plus noise) through adapters that all start at rank init_r; the final budget,
// target_r × matrices, is exactly the sum of the true ranks, so AdaLoRA lands on the truth only if it puts every
// unit of rank where the change is. The true ranks build the teacher and score the result; training never sees them.
//
//   ./build/examples/libtorch_finetune                       # about 7 s on one core
//   ./build/examples/libtorch_finetune --out DIR --steps N --seed S --threads T
// Exit status 0 when every matrix keeps exactly its true rank, 1 when one does not, 2 for bad arguments.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/optim/adamw.h>
#include <torch/utils.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "adalora/integrations/libtorch.hpp"  // all the library a libtorch trainer needs
#include "adalora/io/safetensors.hpp"           // only for base.safetensors and probe.safetensors (the PEFT check)

namespace {

using adalora::libtorch::SVDLinear;

constexpr std::array<const char*, 6> projection_names{"q", "k", "v", "o", "up", "down"};

// ---- configuration ---------------------------------------------------------------------------------------------

struct settings {
  std::int64_t d_model = 32, d_ff = 64, heads = 4, seq_len = 8, blocks = 2;
  // the planted change's rank per block and projection (q, k, v, o, up, down): 24 in all, 2 per matrix on average
  std::vector<std::array<std::int64_t, 6>> true_rank{{0, 0, 4, 1, 4, 3}, {0, 0, 3, 4, 1, 4}};
  std::int64_t train_seqs = 1024, test_seqs = 256, batch = 32;
  std::int64_t steps = 600;
  double lr = 0.01;
  double noise_ratio = 0.25;  // target noise std / rms of the change's effect on the output
  double sigma = 1.0;         // every singular value of the planted changes
  std::int64_t init_r = 6;
  std::uint64_t seed = 0;
  int threads = 1;
  std::filesystem::path out = "libtorch_finetune_out";

  std::int64_t matrices() const { return blocks * 6; }
  std::int64_t in_of(std::int64_t p) const { return p == 5 ? d_ff : d_model; }
  std::int64_t out_of(std::int64_t p) const { return p == 4 ? d_ff : d_model; }
  std::string name_of(std::int64_t m) const {
    return "blocks." + std::to_string(m / 6) + "." + projection_names[static_cast<std::size_t>(m % 6)];
  }
  std::int64_t rank_of(std::int64_t m) const { return true_rank[static_cast<std::size_t>(m / 6)][m % 6]; }
  std::int64_t total_true_rank() const {
    std::int64_t s = 0;
    for (std::int64_t m = 0; m < matrices(); ++m) s += rank_of(m);
    return s;
  }
};

void usage() {
  std::cout
      << "usage: libtorch_finetune [--out DIR] [--steps N] [--seed S] [--threads T] [--ranks DIGITS] [--sigma X]\n"
         "                         [--noise X] [--init-r R]\n"
         "  --out DIR       where the PEFT adapter, the base weights and a probe batch go (libtorch_finetune_out)\n"
         "  --steps N       optimizer steps (600; at least 200)\n"
         "  --seed S        seeds the base network, the change, the data and the adapters (0)\n"
         "  --threads T     torch's intra-op threads (1)\n"
         "  --ranks DIGITS  the true ranks, 12 digits: q k v o up down of block 0, then of block 1 (004143003414);\n"
         "                  their sum must be a multiple of 12 (the final budget is target_r per matrix)\n"
         "  --sigma X       the singular values of the planted changes (1.0)\n"
         "  --noise X       target noise std / rms of the change's effect on the output (0.25)\n"
         "  --init-r R      every adapter's starting rank (6)\n";
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "libtorch_finetune: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--out")
        s.out = value();
      else if (a == "--steps")
        s.steps = std::stoll(value());
      else if (a == "--seed")
        s.seed = std::stoull(value());
      else if (a == "--threads")
        s.threads = std::stoi(value());
      else if (a == "--noise")
        s.noise_ratio = std::stod(value());
      else if (a == "--sigma")
        s.sigma = std::stod(value());
      else if (a == "--init-r")
        s.init_r = std::stoll(value());
      else if (a == "--ranks") {
        const std::string v = value();
        if (v.size() != 12 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
          throw std::invalid_argument(v);
        for (std::size_t i = 0; i < 12; ++i) s.true_rank[i / 6][i % 6] = v[i] - '0';
      } else if (a == "-h" || a == "--help")
        usage(), std::exit(0);
      else
        throw std::invalid_argument(a);
    } catch (const std::exception&) {
      std::cerr << "libtorch_finetune: bad argument near '" << a << "'\n";
      usage();
      std::exit(2);
    }
  }
  if (s.steps < 200 || s.threads < 1 || s.total_true_rank() % s.matrices() != 0 || s.init_r < 1 ||
      !(s.noise_ratio >= 0.0)) {
    std::cerr << "libtorch_finetune: need --steps >= 200, --threads >= 1, --init-r >= 1, --noise >= 0, and true ranks "
                 "summing to a multiple of 12\n";
    std::exit(2);
  }
  return s;
}

// ---- the network -----------------------------------------------------------------------------------------------

/// h / √(mean(h²) + ε) over the features (no learned scale).
at::Tensor rms_norm(const at::Tensor& h) {
  return h * at::rsqrt(h.square().mean({-1}, true) + 1e-5);
}

/// One pre-norm transformer block; proj(p, x) applies projection p (q, k, v, o, up, down) to x (…, in):
///   a = rms(h);  h += attention(a Wqᵀ, a Wkᵀ, a Wvᵀ) Woᵀ;  m = rms(h);  h += gelu(m Wupᵀ) Wdownᵀ
/// with `heads` heads of width d_model / heads. Several heads keep "the true rank of Wv" well defined (with one, a
/// change of Wv could move into Wo).
template <class Proj>
at::Tensor block_forward(const at::Tensor& h, const settings& s, Proj&& proj) {
  const std::int64_t n = h.size(0), L = h.size(1), d = s.d_model, H = s.heads, dh = d / H;
  auto heads = [&](const at::Tensor& t) { return t.view({n, L, H, dh}).transpose(1, 2); };  // (n, H, L, dh)
  const at::Tensor a = rms_norm(h);
  const at::Tensor q = heads(proj(0, a)), k = heads(proj(1, a)), v = heads(proj(2, a));
  const at::Tensor att = at::softmax(q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh)), -1);
  const at::Tensor c = att.matmul(v).transpose(1, 2).reshape({n, L, d});
  const at::Tensor h1 = h + proj(3, c);
  return h1 + proj(5, at::gelu(proj(4, rms_norm(h1)), "tanh"));
}

/// The six adapted projections of one block.
struct BlockImpl : torch::nn::Module {
  std::array<SVDLinear, 6> proj{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
};
TORCH_MODULE(Block);

/// The student: the frozen base network with an SVDLinear on each of its matrices, at paths blocks.<b>.<projection>.
struct EncoderImpl : torch::nn::Module {
  EncoderImpl(const settings& s, const std::vector<at::Tensor>& base_weights, const adalora::adalora_config& cfg)
      : s_(s) {
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (std::int64_t b = 0; b < s.blocks; ++b) {
      Block block;
      for (std::int64_t p = 0; p < 6; ++p) {
        torch::nn::Linear base(torch::nn::LinearOptions(s.in_of(p), s.out_of(p)).bias(false));
        {
          torch::NoGradGuard no_grad;
          base->weight.copy_(base_weights[static_cast<std::size_t>(b * 6 + p)]);
        }
        block->proj[static_cast<std::size_t>(p)] =
            block->register_module(projection_names[static_cast<std::size_t>(p)], SVDLinear(base, cfg));
      }
      blocks->push_back(block);
    }
  }

  at::Tensor forward(at::Tensor h) {
    for (std::int64_t b = 0; b < s_.blocks; ++b) {
      auto& layers = blocks[static_cast<std::size_t>(b)]->as<BlockImpl>()->proj;
      h = block_forward(
          h, s_, [&](std::int64_t p, const at::Tensor& x) { return layers[static_cast<std::size_t>(p)]->forward(x); });
    }
    return h;
  }

  torch::nn::ModuleList blocks{nullptr};

private:
  settings s_;
};
TORCH_MODULE(Encoder);

/// A network of plain weight matrices (the base network, or the teacher): weights[b·6 + p] is (out, in).
at::Tensor plain_forward(at::Tensor h, const settings& s, const std::vector<at::Tensor>& weights) {
  torch::NoGradGuard no_grad;
  for (std::int64_t b = 0; b < s.blocks; ++b)
    h = block_forward(h, s, [&](std::int64_t p, const at::Tensor& x) {
      return x.matmul(weights[static_cast<std::size_t>(b * 6 + p)].t());
    });
  return h;
}

// ---- the task --------------------------------------------------------------------------------------------------

struct task {
  std::vector<at::Tensor> base, teacher;
  at::Tensor train_x, train_y, test_x, test_y;
  double noise_floor = 0.0;  // held-out MSE of the teacher itself on the noisy targets
  double base_loss = 0.0;    // held-out MSE of the base network
};

/// Base weights W ~ N(0, 1/in); the teacher's W + σ Σ_k u_k v_kᵀ with orthonormal u (out) and v (in), k < the
/// matrix's true rank; inputs N(0, 1) tokens; targets the teacher's outputs plus Gaussian noise.
task make_task(const settings& s) {
  torch::manual_seed(s.seed);
  task t;
  for (std::int64_t m = 0; m < s.matrices(); ++m) {
    const std::int64_t in = s.in_of(m % 6), out = s.out_of(m % 6), r = s.rank_of(m);
    at::Tensor w = at::randn({out, in}) / std::sqrt(static_cast<double>(in));
    at::Tensor target = w.clone();
    if (r > 0) {
      const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({out, r})));  // (out, r), orthonormal columns
      const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({in, r})));
      target += s.sigma * u.matmul(v.t());
    }
    t.base.push_back(w);
    t.teacher.push_back(target);
  }
  t.train_x = at::randn({s.train_seqs, s.seq_len, s.d_model});
  t.test_x = at::randn({s.test_seqs, s.seq_len, s.d_model});
  const at::Tensor clean_train = plain_forward(t.train_x, s, t.teacher);
  const at::Tensor clean_test = plain_forward(t.test_x, s, t.teacher);
  const double effect = (clean_train - plain_forward(t.train_x, s, t.base)).square().mean().sqrt().item<double>();
  const double noise_std = s.noise_ratio * effect;
  t.train_y = clean_train + noise_std * at::randn(clean_train.sizes());
  t.test_y = clean_test + noise_std * at::randn(clean_test.sizes());
  t.noise_floor = (clean_test - t.test_y).square().mean().item<double>();
  t.base_loss = (plain_forward(t.test_x, s, t.base) - t.test_y).square().mean().item<double>();
  return t;
}

// ---- output ----------------------------------------------------------------------------------------------------

std::string ranks_text(const std::vector<std::int64_t>& ranks, std::int64_t per_block) {
  std::string s;
  for (std::size_t m = 0; m < ranks.size(); ++m) {
    if (m && static_cast<std::int64_t>(m) % per_block == 0) s += " |";
    s += " " + std::to_string(ranks[m]);
  }
  return s;
}

/// The base weights under the names of a plain torch.nn model with the same paths ("blocks.0.q.weight"), and a probe
/// batch (x and the fine-tuned student's output), for checking the export in PEFT.
void write_base_and_probe(const settings& s, const task& t, Encoder& student) {
  adalora::io::safetensors_writer base;
  for (std::int64_t m = 0; m < s.matrices(); ++m) {
    const auto v = adalora::libtorch::host_copy(t.base[static_cast<std::size_t>(m)]);
    base.add(s.name_of(m) + ".weight",
             {static_cast<std::size_t>(s.out_of(m % 6)), static_cast<std::size_t>(s.in_of(m % 6))}, v);
  }
  base.write(s.out / "base.safetensors");
  student->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = t.test_x.slice(0, 0, 16);
  const at::Tensor y = student->forward(x);
  auto dims = [](const at::Tensor& a) {
    std::vector<std::size_t> d;
    for (auto e : a.sizes()) d.push_back(static_cast<std::size_t>(e));
    return d;
  };
  adalora::io::safetensors_writer probe;
  probe.add_metadata("blocks", std::to_string(s.blocks));
  probe.add_metadata("d_model", std::to_string(s.d_model));
  probe.add_metadata("d_ff", std::to_string(s.d_ff));
  probe.add_metadata("heads", std::to_string(s.heads));
  probe.add("x", dims(x), adalora::libtorch::host_copy(x));
  probe.add("y", dims(y), adalora::libtorch::host_copy(y));
  probe.write(s.out / "probe.safetensors");
}

}  // namespace

int main(int argc, char** argv) try {
  const settings s = parse(argc, argv);
  at::set_num_threads(s.threads);
  const task data = make_task(s);

  adalora::adalora_config cfg;
  cfg.init_r = s.init_r;
  cfg.target_r = s.total_true_rank() / s.matrices();  // the final budget is exactly the sum of the true ranks
  cfg.tinit = s.steps / 4;  // learn before the first mask: a singular value pruned early rarely comes back
  cfg.tfinal = s.steps * 3 / 10;
  cfg.deltaT = 10;
  cfg.total_step = s.steps;
  cfg.lora_alpha = static_cast<double>(cfg.init_r);  // scaling ≈ 1
  cfg.orth_reg_weight = 0.1;
  cfg.beta1 = cfg.beta2 = 0.85;

  torch::manual_seed(s.seed + 1);  // the adapters' initialisation
  Encoder student(s, data.base, cfg);
  adalora::rank_allocator<adalora::eigen_backend> allocator(cfg);
  auto attached = adalora::libtorch::attach(allocator, student);  // every SVDLinear, under its path in the model

  std::vector<at::Tensor> trainable;
  for (const auto& p : student->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(s.lr).weight_decay(0.0));

  std::printf(
      "libtorch_finetune: %lld blocks (d_model %lld, %lld heads, d_ff %lld), %lld adapted matrices, "
      "%zu trainable tensors\n",
      static_cast<long long>(s.blocks), static_cast<long long>(s.d_model), static_cast<long long>(s.heads),
      static_cast<long long>(s.d_ff), static_cast<long long>(s.matrices()), trainable.size());
  std::printf(
      "AdaLoRA: init_r %lld -> target_r %lld (budget %lld -> %lld), tinit %lld, tfinal %lld, deltaT %lld, "
      "%lld steps\n",
      static_cast<long long>(cfg.init_r), static_cast<long long>(cfg.target_r),
      static_cast<long long>(allocator.initial_budget()), static_cast<long long>(allocator.target_budget()),
      static_cast<long long>(cfg.tinit), static_cast<long long>(cfg.tfinal), static_cast<long long>(cfg.deltaT),
      static_cast<long long>(cfg.total_step));
  std::printf("held-out MSE of the base network %.4f, noise floor %.4f\n\n", data.base_loss, data.noise_floor);
  std::printf("%6s %9s %9s %7s  ranks (q k v o up down per block)\n", "step", "loss", "orth reg", "budget");

  const std::int64_t print_every = std::max<std::int64_t>(1, s.steps / 12);
  at::Tensor order;
  for (std::int64_t t = 0; t < s.steps; ++t) {
    const std::int64_t per_epoch = s.train_seqs / s.batch, i = t % per_epoch;
    if (i == 0) order = at::randperm(s.train_seqs);
    const at::Tensor idx = order.slice(0, i * s.batch, (i + 1) * s.batch);
    for (auto& group : optimizer.param_groups())  // lr decays linearly to 0
      static_cast<torch::optim::AdamWOptions&>(group.options())
          .lr(s.lr * (1.0 - static_cast<double>(t) / static_cast<double>(s.steps)));

    const at::Tensor task_loss =
        (student->forward(data.train_x.index_select(0, idx)) - data.train_y.index_select(0, idx)).square().mean();
    const at::Tensor reg = adalora::libtorch::orthogonal_regularization(attached);  // γ·R, γ from cfg
    (task_loss + reg).backward();
    optimizer.step();
    const adalora::step_report report = attached.step(t);  // rebinds the gradients, updates importance, masks λ
    student->zero_grad(/*set_to_none=*/true);              // the next backward allocates new gradient tensors

    if (t % print_every == 0 || t == cfg.final_step() || t == s.steps - 1)
      std::printf("%6lld %9.4f %9.4f %7lld %s%s\n", static_cast<long long>(t), task_loss.item<double>(),
                  reg.item<double>(), static_cast<long long>(report.budget), ranks_text(allocator.ranks(), 6).c_str(),
                  report.phase == adalora::allocation_phase::final_force ? "   <- final pattern fixed" : "");
  }

  // ---- result ----
  student->eval();
  double test_loss = 0.0;
  {
    torch::NoGradGuard no_grad;
    test_loss = (student->forward(data.test_x) - data.test_y).square().mean().item<double>();
  }
  const auto kept = allocator.ranks();
  std::printf("\nheld-out MSE: base %.4f -> fine-tuned %.4f (noise floor %.4f)\n\n", data.base_loss, test_loss,
              data.noise_floor);
  std::printf("%-14s %5s %5s\n", "matrix", "true", "kept");
  std::int64_t matching = 0;
  float lowest_kept = INFINITY, highest_pruned = -INFINITY;
  for (std::int64_t m = 0; m < s.matrices(); ++m) {
    const auto name = s.name_of(m);
    const bool ok = kept[static_cast<std::size_t>(m)] == s.rank_of(m);
    matching += ok;
    std::printf("%-14s %5lld %5lld%s\n", name.c_str(), static_cast<long long>(s.rank_of(m)),
                static_cast<long long>(kept[static_cast<std::size_t>(m)]), ok ? "" : "   <- differs");
    const auto scores = allocator.triplet_scores(name);
    const auto pattern = allocator.rank_pattern(name);
    for (std::size_t i = 0; i < scores.size(); ++i) {
      if (pattern[i])
        lowest_kept = std::min(lowest_kept, scores[i]);
      else
        highest_pruned = std::max(highest_pruned, scores[i]);
    }
  }
  std::printf(
      "\nkept ranks equal the true ranks on %lld of %lld matrices; final scores: lowest kept %.3g, highest "
      "pruned %.3g (%.1fx apart)\n",
      static_cast<long long>(matching), static_cast<long long>(s.matrices()), static_cast<double>(lowest_kept),
      static_cast<double>(highest_pruned), static_cast<double>(lowest_kept / highest_pruned));

  // ---- export: PeftModel.from_pretrained(model, DIR/adapter) loads it ----
  std::filesystem::create_directories(s.out);
  adalora::libtorch::write_peft_adalora(s.out / "adapter", attached);
  write_base_and_probe(s, data, student);
  std::printf("wrote %s (PEFT AdaLoRA adapter), base.safetensors and probe.safetensors\n",
              (s.out / "adapter").string().c_str());
  return matching == s.matrices() ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "libtorch_finetune: %s\n", e.what());
  return 3;
}
