// budget_study: a controlled fine-tuning study where the answer is known — LoRA vs AdaLoRA at the same budget.
//
// A frozen base transformer (network.hpp) is fine-tuned towards a target network that differs from it by a true
// low-rank change of a different rank in each of its matrices (most need rank 0 or 1, a few need 6–8), with noise
// on the targets. At the same final budget (an average rank of target_r per matrix) we train
//   (a) LoRA at rank target_r on every matrix,
//   (b) AdaLoRA from init_r down to the budget with the default sensitivity × uncertainty importance,
//   (c) AdaLoRA with the magnitude importance (the paper's ablation),
// over several seeds, and report the held-out loss of each and how well AdaLoRA recovered the true ranks. Nothing
// in training sees the true ranks; they are used only to build the target and to score the result.
//
// Writes results.csv, ranks.csv, curves.csv, budget.csv, summary.json and three SVG pictures into --out.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <numeric>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "adalora/adalora.hpp"
#include "adalora/adapters/lora_adapter.hpp"
#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/optim/adamw.hpp"
#include "network.hpp"
#include "svg.hpp"

namespace budget_study {
namespace {

// ---- configuration ---------------------------------------------------------------------------------------------

enum class method { lora, adalora, adalora_magnitude };
constexpr method all_methods[] = {method::lora, method::adalora, method::adalora_magnitude};

struct study_config {
  net_shape shape;
  std::vector<int> true_rank;  // per matrix, block-major (q, k, v, o, up, down)
  std::size_t train_seqs = 2048, test_seqs = 256, batch = 32;
  std::int64_t steps = 1000, eval_every = 40;
  double lr = 1e-2;
  std::int64_t init_r = 10, target_r = 2, tinit = -1, tfinal = -1, deltaT = 10;  // -1: 10% and 30% of steps
  double orth_reg_weight = 0.1, beta1 = 0.85, beta2 = 0.85;
  double change_scale = 0.8;  // singular values of the true change
  double noise_ratio = 0.5;   // target noise std / rms of the true change's effect on the output
  int seeds = 3;
  unsigned threads = 0;
  bool lr_decay = true;  // linear decay of the learning rate to 0 over the run
  std::vector<method> methods{std::begin(all_methods), std::end(all_methods)};
  std::string out = "budget_study_out";
  bool large = false;

  bool runs(method m) const { return std::find(methods.begin(), methods.end(), m) != methods.end(); }

  /// The AdaLoRA configuration of every AdaLoRA run: lora_alpha = init_r, so that the scaling α/init_r is 1.
  adalora::adalora_config make_adalora_config() const {
    adalora::adalora_config cfg;
    cfg.init_r = init_r;
    cfg.target_r = target_r;
    cfg.tinit = tinit;
    cfg.tfinal = tfinal;
    cfg.deltaT = deltaT;
    cfg.beta1 = beta1;
    cfg.beta2 = beta2;
    cfg.orth_reg_weight = orth_reg_weight;
    cfg.total_step = steps;
    cfg.lora_alpha = static_cast<double>(init_r);
    return cfg;
  }
};

// The true rank of the change in every matrix, one row per block: q k v o up down.
constexpr int default_ranks[4][6] = {{1, 0, 7, 0, 1, 0}, {0, 1, 0, 1, 8, 0}, {1, 0, 1, 0, 0, 6}, {0, 1, 0, 7, 1, 0}};
constexpr int large_ranks[6][6] = {{1, 0, 0, 1, 8, 0}, {0, 1, 7, 0, 0, 1}, {1, 0, 0, 0, 1, 6},
                                   {0, 0, 1, 8, 0, 1}, {0, 1, 0, 0, 7, 0}, {1, 0, 6, 1, 0, 0}};
constexpr int high_rank_threshold = 4;  // a matrix whose true rank is at least this counts as "high rank"

void usage() {
  std::printf(
      "budget_study: LoRA vs AdaLoRA at the same rank budget on a task whose answer is known.\n"
      "usage: budget_study [--seeds N] [--out DIR] [--large] [options]\n"
      "  --seeds N        seeds per method (default 3); each seed draws a new base network, change, data and init\n"
      "  --out DIR        output folder (default budget_study_out)\n"
      "  --large          a larger network (6 blocks, d_model 128, d_ff 256) and 1500 steps\n"
      "  --threads N      runs trained at once (default: the number of cores)\n"
      "  --steps N        optimizer steps per run (default 1000)\n"
      "  --lr X           AdamW learning rate (default 0.01), decayed linearly to 0 unless --constant-lr\n"
      "  --init-r N       AdaLoRA's initial rank per matrix (default 10)\n"
      "  --target-r N     the budget: average final rank per matrix, and LoRA's rank (default 2)\n"
      "  --tinit N        AdaLoRA warm-up steps (default 10%% of the steps)\n"
      "  --tfinal N       AdaLoRA steps with the final rank pattern (default 30%% of the steps)\n"
      "  --orth X         orthogonal regularizer weight (default 0.1)\n"
      "  --noise X        target noise std relative to the true change's effect (default 0.5)\n"
      "  --methods LIST   comma-separated subset of lora,adalora,adalora_magnitude\n");
}

study_config parse(int argc, char** argv) {
  study_config c;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--large") c.large = true;
  if (c.large) {
    c.shape = {128, 256, 6, 8, 4};
    c.steps = 1500;
    c.train_seqs = 4096;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--large") continue;
    if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else if (a == "--seeds") c.seeds = std::stoi(value());
    else if (a == "--out") c.out = value();
    else if (a == "--steps") c.steps = std::stoll(value());
    else if (a == "--threads") c.threads = static_cast<unsigned>(std::stoul(value()));
    else if (a == "--lr") c.lr = std::stod(value());
    else if (a == "--constant-lr") c.lr_decay = false;
    else if (a == "--methods") {
      c.methods.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) {
        if (item == "lora") c.methods.push_back(method::lora);
        else if (item == "adalora") c.methods.push_back(method::adalora);
        else if (item == "adalora_magnitude") c.methods.push_back(method::adalora_magnitude);
        else {
          std::fprintf(stderr, "--methods: unknown method '%s'\n", item.c_str());
          std::exit(2);
        }
      }
    }
    else if (a == "--init-r") c.init_r = std::stoll(value());
    else if (a == "--target-r") c.target_r = std::stoll(value());
    else if (a == "--tinit") c.tinit = std::stoll(value());
    else if (a == "--tfinal") c.tfinal = std::stoll(value());
    else if (a == "--orth") c.orth_reg_weight = std::stod(value());
    else if (a == "--noise") c.noise_ratio = std::stod(value());
    else {
      std::fprintf(stderr, "unknown argument '%s'\n", a.c_str());
      usage();
      std::exit(2);
    }
  }
  if (c.seeds < 1) c.seeds = 1;
  if (c.steps < 10) c.steps = 10;
  if (c.tinit < 0) c.tinit = c.steps / 10;
  if (c.tfinal < 0) c.tfinal = 3 * c.steps / 10;
  c.eval_every = std::max<std::int64_t>(1, c.steps / 25);
  for (std::size_t b = 0; b < c.shape.blocks; ++b)
    for (std::size_t p = 0; p < projections_per_block; ++p)
      c.true_rank.push_back(c.large ? large_ranks[b][p] : default_ranks[b][p]);
  return c;
}

// ---- the task --------------------------------------------------------------------------------------------------

matrix gaussian(std::size_t n, double std, std::mt19937_64& rng) {
  std::normal_distribution<double> d(0.0, std);
  matrix m(n);
  for (auto& v : m) v = static_cast<float>(d(rng));
  return m;
}

/// `count` orthonormal vectors of length n (rows of the result), by Gram–Schmidt on Gaussian vectors.
std::vector<std::vector<double>> orthonormal(std::size_t count, std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<std::vector<double>> v(count, std::vector<double>(n));
  for (std::size_t k = 0; k < count; ++k) {
    for (auto& x : v[k]) x = d(rng);
    for (int pass = 0; pass < 2; ++pass)
      for (std::size_t j = 0; j < k; ++j) {
        const double dot = std::inner_product(v[k].begin(), v[k].end(), v[j].begin(), 0.0);
        for (std::size_t i = 0; i < n; ++i) v[k][i] -= dot * v[j][i];
      }
    const double norm = std::sqrt(std::inner_product(v[k].begin(), v[k].end(), v[k].begin(), 0.0));
    for (auto& x : v[k]) x /= norm;
  }
  return v;
}

struct task {
  frozen_transformer base, target;
  matrix train_x, train_y;
  matrix test_x, test_y, test_y_clean;
  double noise_std = 0.0;
  double base_loss = 0.0;  // held-out loss of the base network without adapters
};

double mse(const matrix& a, const matrix& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a[i] - b[i]) * double(a[i] - b[i]);
  return s / double(a.size());
}

/// Output of `net` without adapters, in chunks.
matrix plain_output(const frozen_transformer& net, const matrix& x, std::size_t sequences) {
  backend be;
  workspace ws;
  const std::size_t row = net.shape().seq_len * net.shape().d_model, chunk = 256;
  matrix out(x.size());
  for (std::size_t s = 0; s < sequences; s += chunk) {
    const std::size_t n = std::min(chunk, sequences - s);
    matrix xs(x.begin() + static_cast<std::ptrdiff_t>(s * row), x.begin() + static_cast<std::ptrdiff_t>((s + n) * row));
    const matrix& y = net.forward<adalora::svd_adapter<backend>>(be, xs, n, nullptr, ws);
    std::copy(y.begin(), y.end(), out.begin() + static_cast<std::ptrdiff_t>(s * row));
  }
  return out;
}

/// Base weights W ~ N(0, 1/in); target = W + Σ_k σ_k u_k v_kᵀ with orthonormal u, v and the matrix's true rank;
/// inputs N(0, 1) tokens; targets the target network's output plus Gaussian noise.
task make_task(const study_config& c, std::uint64_t seed) {
  std::mt19937_64 rng(0x5eed0000ull + seed);
  const net_shape& s = c.shape;
  std::vector<matrix> base_w, target_w;
  for (std::size_t m = 0; m < s.matrices(); ++m) {
    const std::size_t in = s.in_of(m), out = s.out_of(m);
    base_w.push_back(gaussian(out * in, 1.0 / std::sqrt(double(in)), rng));
    matrix w = base_w.back();
    const auto r = static_cast<std::size_t>(c.true_rank[m]);
    const auto u = orthonormal(r, out, rng), v = orthonormal(r, in, rng);
    for (std::size_t k = 0; k < r; ++k) {
      const double sigma = c.change_scale * (1.0 - 0.4 * double(k) / double(std::max<std::size_t>(r, 1)));
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) w[o * in + i] += static_cast<float>(sigma * u[k][o] * v[k][i]);
    }
    target_w.push_back(std::move(w));
  }
  task t{frozen_transformer(s, base_w), frozen_transformer(s, target_w), {}, {}, {}, {}, {}, 0.0, 0.0};
  const std::size_t row = s.seq_len * s.d_model;
  t.train_x = gaussian(c.train_seqs * row, 1.0, rng);
  t.test_x = gaussian(c.test_seqs * row, 1.0, rng);
  t.train_y = plain_output(t.target, t.train_x, c.train_seqs);
  t.test_y_clean = plain_output(t.target, t.test_x, c.test_seqs);
  const matrix base_train = plain_output(t.base, t.train_x, c.train_seqs);
  t.noise_std = c.noise_ratio * std::sqrt(mse(base_train, t.train_y));
  std::normal_distribution<double> noise(0.0, t.noise_std);
  for (auto& v : t.train_y) v += static_cast<float>(noise(rng));
  t.test_y = t.test_y_clean;
  for (auto& v : t.test_y) v += static_cast<float>(noise(rng));
  t.base_loss = mse(plain_output(t.base, t.test_x, c.test_seqs), t.test_y);
  return t;
}

// ---- one training run ------------------------------------------------------------------------------------------

const char* method_key(method m) {
  return m == method::lora ? "lora" : m == method::adalora ? "adalora" : "adalora_magnitude";
}
const char* method_label(method m, bool short_form = false) {
  if (short_form) return m == method::lora ? "LoRA" : m == method::adalora ? "AdaLoRA" : "AdaLoRA-mag";
  return m == method::lora ? "LoRA (fixed rank)"
         : m == method::adalora ? "AdaLoRA (sensitivity x uncertainty)"
                                : "AdaLoRA (magnitude)";
}
const char* method_color(method m) {
  return m == method::lora ? "#d95f02" : m == method::adalora ? "#1b6ec2" : "#2ca02c";
}

struct progress {
  std::atomic<std::int64_t> step{-1};
  std::atomic<double> loss{0.0};
  std::atomic<bool> done{false};
};

struct run_result {
  method how = method::lora;
  int seed = 0;
  std::vector<std::int64_t> eval_step;
  std::vector<double> eval_loss;
  std::vector<std::int64_t> budget;                  // per step (AdaLoRA)
  std::vector<std::int64_t> rank_high, rank_low;     // per step: total rank of the true high-rank / other matrices
  std::vector<std::int64_t> final_rank;              // per matrix
  double final_loss = 0.0, final_excess = 0.0;       // held-out loss vs noisy and clean targets
  std::size_t final_params = 0;                      // trainable parameters the adapters keep at the end
  double seconds = 0.0;
};

/// Held-out loss (noisy targets) and excess loss (clean targets) with the current adapters.
template <class Adapter>
std::pair<double, double> held_out(const study_config& c, const task& t, std::vector<Adapter>& adapters,
                                   workspace& ws) {
  backend be;
  for (auto& a : adapters) a.train(false);
  const matrix& y = t.base.forward(be, t.test_x, c.test_seqs, &adapters, ws);
  for (auto& a : adapters) a.train(true);
  return {mse(y, t.test_y), mse(y, t.test_y_clean)};
}

/// The shared loop: forward, MSE, backward, `extra_grad` (the regularizer), AdamW, `after_step(t)`, zero grads.
template <class Adapter>
void train(const study_config& c, const task& t, std::uint64_t seed, std::vector<Adapter>& adapters,
           const std::function<void()>& extra_grad, const std::function<void(std::int64_t)>& after_step,
           run_result& r, progress& prog) {
  backend be;
  std::vector<adalora::parameter_span> params;
  for (auto& a : adapters)
    for (auto p : a.parameters()) params.push_back(p);
  adalora::adamw_options o;
  o.lr = c.lr;
  o.weight_decay = 0.0;
  adalora::adamw<backend> optimizer(params, o);

  std::mt19937_64 rng(0xba7c4000ull + seed);  // the batch order: the same for every method of a seed
  std::uniform_int_distribution<std::size_t> pick(0, c.train_seqs - 1);
  const std::size_t row = c.shape.seq_len * c.shape.d_model;
  matrix x(c.batch * row), y(c.batch * row), grad(c.batch * row);
  workspace ws, eval_ws;
  double smoothed = 0.0;
  auto evaluate = [&](std::int64_t step) {
    r.eval_step.push_back(step);
    r.eval_loss.push_back(held_out(c, t, adapters, eval_ws).first);
  };
  evaluate(0);
  for (std::int64_t step = 0; step < c.steps; ++step) {
    for (std::size_t b = 0; b < c.batch; ++b) {
      const std::size_t s = pick(rng);
      std::copy_n(t.train_x.begin() + static_cast<std::ptrdiff_t>(s * row), row,
                  x.begin() + static_cast<std::ptrdiff_t>(b * row));
      std::copy_n(t.train_y.begin() + static_cast<std::ptrdiff_t>(s * row), row,
                  y.begin() + static_cast<std::ptrdiff_t>(b * row));
    }
    const matrix& out = t.base.forward(be, x, c.batch, &adapters, ws);
    const double loss = mse(out, y);
    const float g = 2.0f / static_cast<float>(out.size());
    for (std::size_t i = 0; i < out.size(); ++i) grad[i] = g * (out[i] - y[i]);
    t.base.backward(be, grad, c.batch, adapters, ws);
    if (extra_grad) extra_grad();
    if (c.lr_decay) optimizer.set_lr(c.lr * (1.0 - double(step) / double(c.steps)));
    optimizer.step();
    if (after_step) after_step(step);
    optimizer.zero_grad();

    smoothed = step == 0 ? loss : 0.95 * smoothed + 0.05 * loss;
    prog.step = step + 1;
    prog.loss = smoothed;
    if ((step + 1) % c.eval_every == 0 || step + 1 == c.steps) evaluate(step + 1);
  }
  std::tie(r.final_loss, r.final_excess) = held_out(c, t, adapters, eval_ws);
}

run_result run_lora(const study_config& c, const task& t, int seed, progress& prog) {
  run_result r;
  r.how = method::lora;
  r.seed = seed;
  std::vector<adalora::lora_adapter<backend>> adapters;
  const auto rank = static_cast<std::size_t>(c.target_r);
  for (std::size_t m = 0; m < c.shape.matrices(); ++m) {
    adalora::adapter_options o;
    o.lora_alpha = static_cast<double>(rank);  // scaling α/r = 1, as for the SVD adapters below
    o.seed = 1000u * static_cast<unsigned>(seed) + m;
    adapters.emplace_back(c.shape.in_of(m), c.shape.out_of(m), rank, o);
    r.final_rank.push_back(static_cast<std::int64_t>(rank));
    r.final_params += rank * (c.shape.in_of(m) + c.shape.out_of(m));
  }
  train(c, t, static_cast<std::uint64_t>(seed), adapters, {}, {}, r, prog);
  return r;
}

template <class Metric>
run_result run_adalora(const study_config& c, const task& t, int seed, method how, progress& prog) {
  run_result r;
  r.how = how;
  r.seed = seed;
  const adalora::adalora_config cfg = c.make_adalora_config();
  std::vector<adalora::svd_adapter<backend>> adapters;
  for (std::size_t m = 0; m < c.shape.matrices(); ++m)
    adapters.push_back(adalora::svd_adapter<backend>::from_config(c.shape.in_of(m), c.shape.out_of(m), cfg,
                                                                   1000u * static_cast<unsigned>(seed) + m));
  adalora::rank_allocator<backend, Metric> allocator(cfg);
  std::vector<adalora::svd_adapter<backend>*> ptrs;
  for (std::size_t m = 0; m < adapters.size(); ++m) {
    allocator.add_adapter(c.shape.name_of(m), adapters[m].allocator_views());
    ptrs.push_back(&adapters[m]);
  }
  auto regularize = [&] {
    adalora::orthogonal_regularization<backend>(std::span<adalora::svd_adapter<backend>* const>(ptrs),
                                                c.orth_reg_weight);
  };
  auto allocate = [&](std::int64_t step) {
    const auto rep = allocator.step(step);
    const auto ranks = allocator.ranks();
    std::int64_t high = 0, low = 0;
    for (std::size_t m = 0; m < ranks.size(); ++m) (c.true_rank[m] >= high_rank_threshold ? high : low) += ranks[m];
    r.budget.push_back(rep.budget);
    r.rank_high.push_back(high);
    r.rank_low.push_back(low);
  };
  train(c, t, static_cast<std::uint64_t>(seed), adapters, regularize, allocate, r, prog);
  r.final_rank = allocator.ranks();
  for (std::size_t m = 0; m < adapters.size(); ++m)
    r.final_params +=
        static_cast<std::size_t>(r.final_rank[m]) * (c.shape.in_of(m) + c.shape.out_of(m) + 1);
  return r;
}

// ---- statistics ------------------------------------------------------------------------------------------------

struct stats {
  double mean = 0, sd = 0, min = 0, max = 0;
};
stats summarize(const std::vector<double>& v) {
  stats s;
  if (v.empty()) return s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / double(v.size() - 1)) : 0.0;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  return s;
}

std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<std::size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < idx.size();) {
    std::size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    for (std::size_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * double(i + j) + 1.0;
    i = j + 1;
  }
  return r;
}

/// Spearman's rank correlation (Pearson correlation of the average ranks).
double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const auto ra = average_ranks(a), rb = average_ranks(b);
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / double(ra.size());
  const double mb = std::accumulate(rb.begin(), rb.end(), 0.0) / double(rb.size());
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0.0;
}

/// How many of the k true high-rank matrices are among the k matrices with the largest final rank; ties are
/// broken against the high-rank matrices (a pessimistic count).
std::size_t high_rank_found(const std::vector<int>& true_rank, const std::vector<std::int64_t>& final_rank) {
  std::vector<std::size_t> idx(true_rank.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto high = [&](std::size_t m) { return true_rank[m] >= high_rank_threshold; };
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
    if (final_rank[a] != final_rank[b]) return final_rank[a] > final_rank[b];
    return !high(a) && high(b);
  });
  const auto k = static_cast<std::size_t>(std::count_if(true_rank.begin(), true_rank.end(), [](int r) {
    return r >= high_rank_threshold;
  }));
  std::size_t found = 0;
  for (std::size_t i = 0; i < k; ++i) found += high(idx[i]) ? 1u : 0u;
  return found;
}

/// Σ_m min(final rank, true rank) / Σ_m true rank: the share of the true change's directions the final adapters
/// have room for.
double true_rank_covered(const std::vector<int>& true_rank, const std::vector<std::int64_t>& final_rank) {
  double covered = 0, total = 0;
  for (std::size_t m = 0; m < true_rank.size(); ++m) {
    covered += double(std::min<std::int64_t>(final_rank[m], true_rank[m]));
    total += double(true_rank[m]);
  }
  return total > 0 ? covered / total : 1.0;
}

/// The per-seed results of one method.
struct method_summary {
  std::vector<double> loss, excess, rho, found, covered;
  std::vector<double> mean_rank;  // per matrix, over seeds
};

std::string seeds_text(int n) { return std::to_string(n) + (n == 1 ? " seed" : " seeds"); }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// ---- pictures --------------------------------------------------------------------------------------------------

void write_pictures(const study_config& c, const std::vector<run_result>& runs,
                    const std::vector<method_summary>& ms, std::size_t k_high,
                    const std::vector<double>& noise_floors, double base_loss, const std::string& dir) {
  const auto floors = summarize(noise_floors);
  const double noise_floor = floors.mean;
  // Pictures may use non-ASCII signs; the console table keeps to ASCII.
  auto pretty = [](method m) {
    return std::string(m == method::lora      ? "LoRA (fixed rank)"
                       : m == method::adalora ? "AdaLoRA (sensitivity \u00d7 uncertainty)"
                                              : "AdaLoRA (magnitude)");
  };
  int high_lo = 1 << 30, high_hi = 0;
  for (int r : c.true_rank)
    if (r >= high_rank_threshold) high_lo = std::min(high_lo, r), high_hi = std::max(high_hi, r);
  const std::string high_range = std::to_string(high_lo) + "-" + std::to_string(high_hi);
  const std::string budget_note = "init_r " + std::to_string(c.init_r) + " \u2192 target_r " + std::to_string(c.target_r) +
                                  " per matrix, tinit " + std::to_string(c.tinit) + ", tfinal " +
                                  std::to_string(c.tfinal) + ", deltaT " + std::to_string(c.deltaT) + ", " +
                                  std::to_string(c.shape.matrices()) + " matrices";
  // (1) the budget over the steps, and where it went
  {
    svg::line_chart ch;
    ch.title = "AdaLoRA's rank budget over training";
    ch.subtitle = "total rank kept, and how much of it sits in the " + std::to_string(k_high) +
                  " matrices whose true change has rank " + high_range + " (mean over " + seeds_text(c.seeds) + ")";
    ch.x_label = "optimizer step";
    ch.y_label = "total rank (sum over matrices)";
    ch.note = "AdaLoRA: " + budget_note;
    const run_result* first = nullptr;
    for (const auto& r : runs)
      if (r.how != method::lora) {
        first = &r;
        break;
      }
    if (first) {
      svg::series b{"budget (cubic schedule)", "#555555", {}, {}, {}, {}, false, true, 2.2};
      for (std::size_t i = 0; i < first->budget.size(); ++i) {
        b.x.push_back(double(i));
        b.y.push_back(double(first->budget[i]));
      }
      ch.lines.push_back(b);
      svg::series lora{"LoRA budget (fixed)", method_color(method::lora), {0.0, double(c.steps)},
                       {double(c.target_r * std::int64_t(c.shape.matrices())),
                        double(c.target_r * std::int64_t(c.shape.matrices()))},
                       {}, {}, true, false, 2.0};
      ch.lines.push_back(lora);
      for (method m : {method::adalora, method::adalora_magnitude}) {
        for (int which = 0; which < 2; ++which) {
          svg::series s;
          s.label = std::string(method_label(m, true)) +
                    (which == 0 ? ": rank in the true rank " + high_range + " matrices" : ": rank in the other matrices");
          s.color = method_color(m);
          s.dashed = which == 1;
          s.width = 1.8;
          s.step_shape = true;
          std::size_t count = 0;
          for (const auto& r : runs) {
            if (r.how != m) continue;
            const auto& v = which == 0 ? r.rank_high : r.rank_low;
            if (s.y.empty()) s.y.assign(v.size(), 0.0);
            for (std::size_t i = 0; i < v.size(); ++i) s.y[i] += double(v[i]);
            ++count;
          }
          for (std::size_t i = 0; i < s.y.size(); ++i) {
            s.y[i] /= double(count);
            s.x.push_back(double(i));
          }
          if (count) ch.lines.push_back(s);
        }
      }
      double high_total = 0;
      for (int r : c.true_rank)
        if (r >= high_rank_threshold) high_total += r;
      ch.lines.push_back(svg::series{"true ranks of those " + std::to_string(k_high) + ", summed (" +
                                         std::to_string(static_cast<int>(high_total)) + ")",
                                     "#999999", {0.0, double(c.steps)},
                                     {high_total, high_total}, {}, {}, true, false, 1.2});
    }
    ch.y_min = 0;
    svg::write_file(dir + "/budget.svg", svg::render(ch));
  }
  // (2) held-out loss curves, mean over seeds with a min-max band
  {
    svg::line_chart ch;
    ch.title = "Held-out loss at the same final budget";
    ch.subtitle = "mean over " + seeds_text(c.seeds) + ", band: min\u2013max over seeds; average rank " +
                  std::to_string(c.target_r) + " per matrix at the end for every method";
    ch.x_label = "optimizer step";
    ch.y_label = "held-out MSE (log scale)";
    ch.log_y = true;
    ch.note = "AdaLoRA: " + budget_note +
              "\nnoise floor: the MSE of the exact target network on the noisy held-out targets (band: over seeds)";
    double top = 0;
    for (method m : c.methods) {
      svg::series s;
      s.label = pretty(m);
      s.color = method_color(m);
      s.dashed = m == method::adalora_magnitude;  // it often lies on top of the other AdaLoRA curve
      std::vector<std::vector<double>> per_point;
      for (const auto& r : runs) {
        if (r.how != m) continue;
        if (s.x.empty())
          for (auto st : r.eval_step) s.x.push_back(double(st));
        per_point.resize(r.eval_loss.size());
        for (std::size_t i = 0; i < r.eval_loss.size(); ++i) per_point[i].push_back(r.eval_loss[i]);
      }
      for (const auto& p : per_point) {
        const auto st = summarize(p);
        s.y.push_back(st.mean);
        s.lo.push_back(st.min);
        s.hi.push_back(st.max);
      }
      for (double v : s.hi) top = std::max(top, v);
      ch.lines.push_back(s);
    }
    svg::series floor{"noise floor", "#888888", {0.0, double(c.steps)}, {noise_floor, noise_floor},
                      {floors.min, floors.min}, {floors.max, floors.max}, true, false, 1.4};
    ch.lines.push_back(floor);
    ch.y_min = floors.min * 0.85;
    ch.y_max = top * 1.05;
    svg::write_file(dir + "/loss_curves.svg", svg::render(ch));
  }
  // (3) heatmap of the final ranks beside the true ranks
  {
    svg::heatmap_figure f;
    f.title = "Where the rank budget went";
    f.subtitle = "final rank per matrix, mean over " + seeds_text(c.seeds) + "; the same total budget (" +
                 std::to_string(c.target_r * std::int64_t(c.shape.matrices())) + ") for every method";
    f.panels_per_row = 2;
    for (std::size_t b = 0; b < c.shape.blocks; ++b) f.row_labels.push_back("block " + std::to_string(b));
    for (const char* n : projection_names) f.col_labels.push_back(n);
    f.v_max = double(c.init_r);
    f.scale_label = "rank";
    for (int r : c.true_rank) f.outlined.push_back(r >= high_rank_threshold);
    svg::heatmap_panel truth{"true rank of the change", {}, {}, {}};
    for (int r : c.true_rank) {
      truth.values.push_back(r);
      truth.cell_text.push_back(std::to_string(r));
    }
    truth.footer = {"held-out MSE of the base network " + fmt("%.4f", base_loss),
                    "noise floor " + fmt("%.4f", noise_floor)};
    f.panels.push_back(truth);
    for (method m : c.methods) {
      const auto& sm = ms[static_cast<std::size_t>(m)];
      svg::heatmap_panel p{m == method::lora         ? "LoRA, rank " + std::to_string(c.target_r) + " everywhere"
                           : m == method::adalora ? "AdaLoRA (sensitivity \u00d7 uncertainty)"
                                                  : "AdaLoRA (magnitude)",
                           sm.mean_rank,
                           {},
                           {}};
      for (double v : p.values)
        p.cell_text.push_back(std::abs(v - std::round(v)) < 1e-9 ? std::to_string(int(std::lround(v)))
                                                                 : fmt("%.1f", v));
      const auto l = summarize(sm.loss);
      p.footer.push_back("held-out MSE " + fmt("%.4f", l.mean) + " \u00b1 " + fmt("%.4f", l.sd));
      if (m == method::lora) {
        p.footer.push_back("true directions covered " + fmt("%.0f%%", 100 * summarize(sm.covered).mean));
      } else {
        p.footer.push_back("high-rank found " + fmt("%.1f", summarize(sm.found).mean) + "/" + std::to_string(k_high) +
                           ", Spearman " + fmt("%.2f", summarize(sm.rho).mean));
        p.footer.push_back("true directions covered " + fmt("%.0f%%", 100 * summarize(sm.covered).mean));
      }
      f.panels.push_back(p);
    }
    f.note = "Outlined: the " + std::to_string(k_high) + " matrices whose true change has rank " + high_range +
             ".\nHigh-rank found: how many of them are among the " + std::to_string(k_high) +
             " matrices with the largest final rank.\nDirections covered: \u03a3 min(final rank, true rank) / "
             "\u03a3 true rank.\nAdaLoRA: " + budget_note + ".";
    svg::write_file(dir + "/ranks_heatmap.svg", svg::render(f));
  }
}

}  // namespace
}  // namespace budget_study

int main(int argc, char** argv) try {
  using namespace budget_study;
  const study_config c = parse(argc, argv);
  c.make_adalora_config().validate();  // fail early on an invalid AdaLoRA configuration, not inside a worker thread
  const auto start = std::chrono::steady_clock::now();
  std::filesystem::create_directories(c.out);

  const auto k_high = static_cast<std::size_t>(
      std::count_if(c.true_rank.begin(), c.true_rank.end(), [](int r) { return r >= high_rank_threshold; }));
  std::printf("budget_study: %zu blocks x (q k v o up down), d_model %zu, d_ff %zu, %zu heads, %zu matrices; %s\n",
              c.shape.blocks, c.shape.d_model, c.shape.d_ff, c.shape.heads, c.shape.matrices(),
              seeds_text(c.seeds).c_str());
  std::printf("true ranks (block: q k v o up down):");
  for (std::size_t m = 0; m < c.true_rank.size(); ++m)
    std::printf("%s%d", m % projections_per_block == 0 ? (m ? " | " : " ") : " ", c.true_rank[m]);
  std::printf("\nbudget: average rank %lld per matrix (%lld in all); AdaLoRA from init_r %lld; %lld steps, batch "
              "%zu x %zu tokens\n",
              (long long)c.target_r, (long long)(c.target_r * std::int64_t(c.shape.matrices())), (long long)c.init_r,
              (long long)c.steps, c.batch, c.shape.seq_len);
  std::fflush(stdout);

  // The tasks (one per seed), then every (seed, method) run on a small pool of threads.
  std::vector<task> tasks;
  for (int s = 0; s < c.seeds; ++s) tasks.push_back(make_task(c, static_cast<std::uint64_t>(s)));
  struct job {
    int seed;
    method how;
  };
  std::vector<job> jobs;
  for (int s = 0; s < c.seeds; ++s)
    for (method m : c.methods) jobs.push_back({s, m});
  std::vector<run_result> results(jobs.size());
  std::vector<progress> progs(jobs.size());
  std::atomic<std::size_t> next{0};
  const unsigned threads = std::max(1u, std::min<unsigned>(c.threads ? c.threads : std::thread::hardware_concurrency(),
                                                           static_cast<unsigned>(jobs.size())));
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    for (std::size_t j; (j = next.fetch_add(1)) < jobs.size();) {
      const auto t0 = std::chrono::steady_clock::now();
      const task& t = tasks[static_cast<std::size_t>(jobs[j].seed)];
      try {
        switch (jobs[j].how) {
          case method::lora: results[j] = run_lora(c, t, jobs[j].seed, progs[j]); break;
          case method::adalora:
            results[j] = run_adalora<adalora::sensitivity_uncertainty>(c, t, jobs[j].seed, jobs[j].how, progs[j]);
            break;
          case method::adalora_magnitude:
            results[j] = run_adalora<adalora::magnitude>(c, t, jobs[j].seed, jobs[j].how, progs[j]);
            break;
        }
      } catch (...) {
        const std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
      results[j].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progs[j].done = true;
    }
  };
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);
  // The progress line: every run in flight, on one line.
  const bool tty = isatty(fileno(stderr)) != 0;
  std::size_t reported = 0;
  for (;;) {
    std::size_t done = 0;
    for (const auto& p : progs) done += p.done ? 1u : 0u;
    std::string line;
    for (std::size_t j = 0; j < jobs.size(); ++j)
      if (!progs[j].done && progs[j].step >= 0) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "[%s s%d] %lld/%lld loss %.4f  ", method_label(jobs[j].how, true),
                      jobs[j].seed, (long long)progs[j].step.load(), (long long)c.steps, progs[j].loss.load());
        line += buf;
      }
    if (tty) {
      std::fprintf(stderr, "\r%s(%zu/%zu done)\033[K", line.c_str(), done, jobs.size());
    } else {
      for (; reported < jobs.size() && progs[reported].done; ++reported)
        std::fprintf(stderr, "[%s seed %d] done: held-out loss %.5f\n", method_label(jobs[reported].how, true),
                     jobs[reported].seed, results[reported].final_loss);
    }
    std::fflush(stderr);
    if (done == jobs.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
  if (tty) std::fprintf(stderr, "\r\033[K");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // ---- tables ----
  const std::string& dir = c.out;
  std::vector<double> true_d(c.true_rank.begin(), c.true_rank.end());
  std::ofstream res(dir + "/results.csv"), ranks(dir + "/ranks.csv"), curves(dir + "/curves.csv"),
      budget(dir + "/budget.csv");
  res << "method,seed,held_out_loss,held_out_excess_loss,noise_floor,base_loss,spearman_vs_true_rank,"
         "high_rank_found,high_rank_total,true_rank_covered,final_trainable_params,seconds\n";
  ranks << "method,seed,matrix,block,projection,true_rank,final_rank\n";
  curves << "method,seed,step,held_out_loss\n";
  std::vector<method_summary> ms(3);
  for (const auto& r : results) {
    const auto& t = tasks[static_cast<std::size_t>(r.seed)];
    auto& s = ms[static_cast<std::size_t>(r.how)];
    const double rho = r.how == method::lora ? 0.0
                                              : spearman(true_d, std::vector<double>(r.final_rank.begin(),
                                                                                     r.final_rank.end()));
    const std::size_t found = high_rank_found(c.true_rank, r.final_rank);
    const double covered = true_rank_covered(c.true_rank, r.final_rank);
    s.loss.push_back(r.final_loss);
    s.excess.push_back(r.final_excess);
    s.covered.push_back(covered);
    if (r.how != method::lora) {
      s.rho.push_back(rho);
      s.found.push_back(double(found));
    }
    if (s.mean_rank.empty()) s.mean_rank.assign(r.final_rank.size(), 0.0);
    for (std::size_t m = 0; m < r.final_rank.size(); ++m) s.mean_rank[m] += double(r.final_rank[m]) / c.seeds;
    res << method_key(r.how) << "," << r.seed << "," << fmt("%.6f", r.final_loss) << ","
        << fmt("%.6f", r.final_excess) << "," << fmt("%.6f", t.noise_std * t.noise_std) << ","
        << fmt("%.6f", t.base_loss) << "," << (r.how == method::lora ? "" : fmt("%.4f", rho)) << ","
        << (r.how == method::lora ? "" : std::to_string(found)) << "," << k_high << "," << fmt("%.4f", covered) << ","
        << r.final_params << ","
        << fmt("%.1f", r.seconds) << "\n";
    for (std::size_t m = 0; m < r.final_rank.size(); ++m)
      ranks << method_key(r.how) << "," << r.seed << "," << c.shape.name_of(m) << "," << m / projections_per_block
            << "," << projection_names[m % projections_per_block] << "," << c.true_rank[m] << ","
            << r.final_rank[m] << "\n";
    for (std::size_t i = 0; i < r.eval_step.size(); ++i)
      curves << method_key(r.how) << "," << r.seed << "," << r.eval_step[i] << "," << fmt("%.6f", r.eval_loss[i])
             << "\n";
  }
  // budget.csv: the schedule and where the rank sits, seed 0
  {
    const run_result *su = nullptr, *mag = nullptr;
    for (const auto& r : results) {
      if (r.seed != 0) continue;
      if (r.how == method::adalora) su = &r;
      if (r.how == method::adalora_magnitude) mag = &r;
    }
    budget << "step,budget,adalora_rank_high,adalora_rank_other,adalora_magnitude_rank_high,"
              "adalora_magnitude_rank_other\n";
    if (su && mag)
      for (std::size_t i = 0; i < su->budget.size(); ++i)
        budget << i << "," << su->budget[i] << "," << su->rank_high[i] << "," << su->rank_low[i] << ","
               << mag->rank_high[i] << "," << mag->rank_low[i] << "\n";
  }
  double noise_floor = 0, base_loss = 0;
  for (const auto& t : tasks) {
    noise_floor += t.noise_std * t.noise_std / c.seeds;
    base_loss += t.base_loss / c.seeds;
  }
  // paired differences: LoRA − AdaLoRA per seed
  // (results are in job order: seed-major, so ms[m].loss[s] is seed s)
  std::vector<std::vector<double>> diff(3);
  if (c.runs(method::lora))
    for (method m : c.methods)
      if (m != method::lora)
        for (int s = 0; s < c.seeds; ++s)
          diff[std::size_t(m)].push_back(ms[0].loss[std::size_t(s)] - ms[std::size_t(m)].loss[std::size_t(s)]);

  std::ofstream js(dir + "/summary.json");
  js << "{\n  \"config\": {\"blocks\": " << c.shape.blocks << ", \"d_model\": " << c.shape.d_model
     << ", \"d_ff\": " << c.shape.d_ff << ", \"seq_len\": " << c.shape.seq_len << ", \"matrices\": "
     << c.shape.matrices() << ", \"steps\": " << c.steps << ", \"batch\": " << c.batch << ", \"lr\": " << c.lr
     << ", \"init_r\": " << c.init_r << ", \"target_r\": " << c.target_r << ", \"tinit\": " << c.tinit
     << ", \"tfinal\": " << c.tfinal << ", \"deltaT\": " << c.deltaT << ", \"orth_reg_weight\": "
     << c.orth_reg_weight << ", \"noise_ratio\": " << c.noise_ratio << ", \"lr_decay\": "
     << (c.lr_decay ? "\"linear\"" : "\"constant\"") << ", \"seeds\": " << c.seeds
     << ", \"threads\": " << threads << "},\n";
  js << "  \"true_rank\": [";
  for (std::size_t m = 0; m < c.true_rank.size(); ++m) js << (m ? ", " : "") << c.true_rank[m];
  js << "],\n  \"noise_floor\": " << fmt("%.6f", noise_floor) << ",\n  \"base_loss\": " << fmt("%.6f", base_loss)
     << ",\n  \"seconds\": " << fmt("%.1f", seconds) << ",\n  \"methods\": {\n";
  for (method m : c.methods) {
    const auto& s = ms[static_cast<std::size_t>(m)];
    const auto l = summarize(s.loss), e = summarize(s.excess);
    js << "    \"" << method_key(m) << "\": {\"held_out_loss\": {\"mean\": " << fmt("%.6f", l.mean)
       << ", \"sd\": " << fmt("%.6f", l.sd) << ", \"min\": " << fmt("%.6f", l.min) << ", \"max\": "
       << fmt("%.6f", l.max) << "}, \"held_out_excess_loss\": {\"mean\": " << fmt("%.6f", e.mean)
       << ", \"sd\": " << fmt("%.6f", e.sd) << "}, \"true_rank_covered\": {\"mean\": "
       << fmt("%.4f", summarize(s.covered).mean) << "}";
    if (m != method::lora) {
      const auto r = summarize(s.rho), f = summarize(s.found);
      js << ", \"spearman\": {\"mean\": " << fmt("%.4f", r.mean) << ", \"sd\": " << fmt("%.4f", r.sd)
         << "}, \"high_rank_found\": {\"mean\": " << fmt("%.3f", f.mean) << ", \"of\": " << k_high << "}";
      if (c.runs(method::lora)) {
        const auto d = summarize(diff[static_cast<std::size_t>(m)]);
        js << ", \"lora_minus_this\": {\"mean\": " << fmt("%.6f", d.mean) << ", \"sd\": " << fmt("%.6f", d.sd)
           << ", \"min\": " << fmt("%.6f", d.min) << "}";
      }
    }
    js << ", \"mean_final_rank\": [";
    for (std::size_t i = 0; i < s.mean_rank.size(); ++i) js << (i ? ", " : "") << fmt("%.3f", s.mean_rank[i]);
    js << "]}" << (m == c.methods.back() ? "\n" : ",\n");
  }
  js << "  }\n}\n";

  std::vector<double> noise_floors;
  for (const auto& t : tasks) noise_floors.push_back(t.noise_std * t.noise_std);
  write_pictures(c, results, ms, k_high, noise_floors, base_loss, dir);

  // ---- the report ----
  std::printf("\nheld-out MSE after %lld steps (base network: %.5f, noise floor: %.5f), over %s:\n",
              (long long)c.steps, base_loss, noise_floor, seeds_text(c.seeds).c_str());
  std::printf("  %-36s %-22s %-19s %-10s %-15s %s\n", "method", "loss mean +- sd", "[min, max]", "covered",
              "Spearman rho", "high-rank found");
  for (method m : c.methods) {
    const auto& s = ms[static_cast<std::size_t>(m)];
    const auto l = summarize(s.loss);
    std::printf("  %-36s %.5f +- %.5f     [%.5f, %.5f]  %5.1f%%    ", method_label(m), l.mean, l.sd, l.min, l.max,
                100.0 * summarize(s.covered).mean);
    if (m == method::lora) {
      std::printf("-               -\n");
    } else {
      const auto r = summarize(s.rho), f = summarize(s.found);
      std::printf("%.3f +- %.3f   %.2f of %zu\n", r.mean, r.sd, f.mean, k_high);
    }
  }
  for (method m : {method::adalora, method::adalora_magnitude}) {
    if (!c.runs(m) || !c.runs(method::lora)) continue;
    const auto& d = diff[static_cast<std::size_t>(m)];
    const auto st = summarize(d);
    const auto wins = std::count_if(d.begin(), d.end(), [](double v) { return v > 0; });
    std::printf("  LoRA - %s, paired by seed: %+.5f +- %.5f (lower for AdaLoRA on %lld of %d seeds)\n",
                method_label(m, true), st.mean, st.sd, (long long)wins, c.seeds);
  }
  std::printf("\nmean final rank per matrix (true rank in brackets):\n  %-8s", "");
  for (const char* n : projection_names) std::printf("%-26s", n);
  for (std::size_t b = 0; b < c.shape.blocks; ++b) {
    std::printf("\n  block %zu ", b);
    for (std::size_t p = 0; p < projections_per_block; ++p) {
      const std::size_t m = b * projections_per_block + p;
      char cell[64];
      auto mean_rank = [&](method how) { return ms[std::size_t(how)].mean_rank.empty() ? 0.0
                                                                                    : ms[std::size_t(how)].mean_rank[m]; };
      std::snprintf(cell, sizeof cell, "[%d] su %.1f mag %.1f", c.true_rank[m], mean_rank(method::adalora),
                    mean_rank(method::adalora_magnitude));
      std::printf("%-26s", cell);
    }
  }
  std::printf("\n\nwrote %s/{results.csv, ranks.csv, curves.csv, budget.csv, summary.json, budget.svg, "
              "loss_curves.svg, ranks_heatmap.svg} in %.1f s\n",
              dir.c_str(), seconds);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nbudget_study: %s\n", e.what());
  return 1;
}
