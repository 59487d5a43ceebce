// budget_study: what the studies share — the task whose answer is known, the methods, one training run, the scores of a
// run against the truth, statistics, and a pool that trains runs in parallel with a progress line.
//
// A frozen base transformer (network.hpp) is fine-tuned towards a target network that differs from it by a true
// low-rank change of a different rank in each of its matrices, with noise on the targets. Nothing in training sees
// the true change; it is used only to build the target and to score the result. budget_study.cpp compares the methods
// at one budget (the demo); budget_sweep.cpp sweeps the budget, the metrics, the schedules and the budgeting phase.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "adalora/adalora.hpp"
#include "adalora/adapters/lora_adapter.hpp"
#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/optim/adamw.hpp"
#include "metrics.hpp"
#include "network.hpp"
#include "one_shot.hpp"

namespace budget_study {

// ---- configuration ---------------------------------------------------------------------------------------------

/// A matrix whose true rank is at least this counts as "high rank".
inline constexpr int high_rank_threshold = 4;

/// How the strength σ_k of the k-th true direction (k = 0 … r − 1) of a matrix of true rank r falls with k.
enum class strength_profile {
  gentle,     ///< σ_k = change_scale · (1 − 0.4 k / r): every direction matters about as much
  geometric,  ///< σ_k = change_scale · decay^k: strengths spread over a decade, the last directions barely matter
};

/// The importance metrics the studies compare: the library's two and the example's three (metrics.hpp, one_shot.hpp).
enum class metric_kind { sensitivity_uncertainty, sensitivity, magnitude, fisher, warmup_sensitivity };
/// The library's budget schedules.
enum class schedule_kind { cubic, linear, constant };

/// One way to fine-tune: LoRA at a fixed rank, or AdaLoRA with a metric, a schedule and its phases.
struct method {
  std::string key;          ///< name in the CSV files and on the command line
  std::string label;        ///< console (ASCII)
  std::string short_label;  ///< progress line
  std::string pretty;       ///< pictures
  std::string color;
  bool lora = false;
  metric_kind metric = metric_kind::sensitivity_uncertainty;
  schedule_kind schedule = schedule_kind::cubic;
  /// > 0: allocation before training, ranks fixed once after this many steps (one_shot::config); else the phases below
  std::int64_t one_shot_warmup = 0;
  /// ≥ 0: tinit and the budgeting phase (T − tfinal − tinit) as fractions of the steps; < 0: the study's tinit, tfinal
  double tinit_fraction = -1.0, budgeting_fraction = -1.0;
  /// The importance EMAs in bfloat16 (adalora::in_place_bf16_state, 4 B per parameter); else float32 in place (the
  /// library's default, PEFT-exact)
  bool bf16_state = false;
};

/// Every method the studies know, by key.
inline std::vector<method> method_catalogue() {
  std::vector<method> all;
  method lora{"lora", "LoRA (fixed rank)", "LoRA", "LoRA (fixed rank)", "#d95f02"};
  lora.lora = true;
  all.push_back(lora);
  all.push_back({"adalora", "AdaLoRA (sensitivity x uncertainty)", "AdaLoRA",
                 "AdaLoRA (sensitivity \u00d7 uncertainty)", "#1b6ec2"});
  method bf16{"adalora_bf16", "AdaLoRA (s x u, bfloat16 state)", "AdaLoRA-bf16",
              "AdaLoRA (sensitivity \u00d7 uncertainty, bfloat16 state)", "#66a61e"};
  bf16.bf16_state = true;
  all.push_back(bf16);
  method sens{"adalora_sensitivity", "AdaLoRA (sensitivity alone)", "AdaLoRA-sens", "AdaLoRA (sensitivity alone)",
              "#7b3294"};
  sens.metric = metric_kind::sensitivity;
  all.push_back(sens);
  method mag{"adalora_magnitude", "AdaLoRA (magnitude)", "AdaLoRA-mag", "AdaLoRA (magnitude)", "#2ca02c"};
  mag.metric = metric_kind::magnitude;
  all.push_back(mag);
  method fisher{"adalora_fisher", "AdaLoRA (Fisher saliency, user metric)", "AdaLoRA-fisher",
                "AdaLoRA (Fisher saliency, user metric)", "#e7298a"};
  fisher.metric = metric_kind::fisher;
  all.push_back(fisher);
  method once{"one_shot", "One-shot after warm-up (user plug-in)", "One-shot", "Ranks fixed once after warm-up (plug-in)",
              "#8c6d31"};
  once.metric = metric_kind::warmup_sensitivity;
  once.one_shot_warmup = -1;  // the study's tinit + 1 steps (resolved in adalora_config_for)
  all.push_back(once);
  method once_su{"one_shot_su", "One-shot after warm-up (sensitivity x uncertainty)", "One-shot-SU",
                 "Ranks fixed once after warm-up (sensitivity \u00d7 uncertainty)", "#b15928"};
  once_su.one_shot_warmup = -1;
  all.push_back(once_su);
  return all;
}

/// The method called `key`; a one-shot method may name its warm-up steps, e.g. "one_shot@20". Exits with a message
/// listing the known ones otherwise.
inline method find_method(const std::string& key) {
  const auto at = key.find('@');
  const std::string base = key.substr(0, at);
  std::string known;
  for (auto m : method_catalogue()) {
    if (m.key == base && (at == std::string::npos || m.one_shot_warmup != 0)) {
      if (at != std::string::npos) {
        m.one_shot_warmup = std::stoll(key.substr(at + 1));
        m.key = key;
        m.label += ", " + std::to_string(m.one_shot_warmup) + " steps";
        m.short_label += "@" + std::to_string(m.one_shot_warmup);
        m.pretty += ", " + std::to_string(m.one_shot_warmup) + " steps";
      }
      return m;
    }
    known += (known.empty() ? "" : ", ") + m.key;
  }
  std::fprintf(stderr, "unknown method '%s'; known: %s (one-shot ones also as NAME@WARMUP_STEPS)\n", key.c_str(),
               known.c_str());
  std::exit(2);
}

struct study_config {
  net_shape shape;
  std::vector<int> true_rank;  // per matrix, block-major (q, k, v, o, up, down)
  strength_profile strengths = strength_profile::gentle;
  double change_scale = 0.8;  // σ of the strongest true direction
  double decay = 0.7;         // geometric profile: σ_k = change_scale · decay^k
  double noise_ratio = 0.5;   // target noise std / rms of the true change's effect on the output
  std::size_t train_seqs = 2048, test_seqs = 256, batch = 32;
  std::int64_t steps = 1000, eval_every = 40;
  double lr = 1e-2;
  bool lr_decay = true;  // linear decay of the learning rate to 0 over the run
  std::int64_t init_r = 10, target_r = 2, tinit = -1, tfinal = -1, deltaT = 10;  // -1: 10% and 30% of steps
  double orth_reg_weight = 0.1, beta1 = 0.85, beta2 = 0.85;
  int seeds = 3;
  unsigned threads = 0;
  std::string out;

  /// σ of the k-th true direction of matrix m.
  double sigma(std::size_t m, std::size_t k) const {
    const auto r = static_cast<std::size_t>(true_rank[m]);
    if (strengths == strength_profile::geometric) return change_scale * std::pow(decay, double(k));
    return change_scale * (1.0 - 0.4 * double(k) / double(std::max<std::size_t>(r, 1)));
  }

  /// The AdaLoRA configuration at average final rank `target`: lora_alpha = init_r, so that the scaling α/init_r is 1.
  adalora::adalora_config make_adalora_config(std::int64_t target) const {
    adalora::adalora_config cfg;
    cfg.init_r = init_r;
    cfg.target_r = target;
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

  /// Steps and phases that were left at -1 get their defaults; true_rank is filled from `ranks` (blocks × 6).
  template <std::size_t Blocks>
  void finish(const int (&ranks)[Blocks][projections_per_block]) {
    if (seeds < 1) seeds = 1;
    if (steps < 10) steps = 10;
    if (tinit < 0) tinit = steps / 10;
    if (tfinal < 0) tfinal = 3 * steps / 10;
    eval_every = std::max<std::int64_t>(1, steps / 25);
    true_rank.clear();
    for (std::size_t b = 0; b < shape.blocks; ++b)
      for (std::size_t p = 0; p < projections_per_block; ++p) true_rank.push_back(ranks[b % Blocks][p]);
  }
};

/// The AdaLoRA configuration of method `m` at average final rank `target`.
inline adalora::adalora_config adalora_config_for(const study_config& c, const method& m, std::int64_t target) {
  adalora::adalora_config cfg = c.make_adalora_config(target);
  if (m.one_shot_warmup != 0)
    return one_shot::config(cfg, m.one_shot_warmup > 0 ? m.one_shot_warmup : c.tinit + 1);
  if (m.tinit_fraction >= 0) {
    cfg.tinit = std::llround(m.tinit_fraction * double(c.steps));
    cfg.tfinal = c.steps - cfg.tinit - std::llround(m.budgeting_fraction * double(c.steps));
  }
  return cfg;
}

/// The options both studies take; returns false for an argument that is not one of them. `value()` reads the next
/// argument.
inline bool parse_common(study_config& c, const std::string& a, const std::function<std::string()>& value) {
  if (a == "--seeds") c.seeds = std::stoi(value());
  else if (a == "--out") c.out = value();
  else if (a == "--steps") c.steps = std::stoll(value());
  else if (a == "--batch") c.batch = std::stoul(value());
  else if (a == "--threads") c.threads = static_cast<unsigned>(std::stoul(value()));
  else if (a == "--lr") c.lr = std::stod(value());
  else if (a == "--constant-lr") c.lr_decay = false;
  else if (a == "--init-r") c.init_r = std::stoll(value());
  else if (a == "--tinit") c.tinit = std::stoll(value());
  else if (a == "--tfinal") c.tfinal = std::stoll(value());
  else if (a == "--orth") c.orth_reg_weight = std::stod(value());
  else if (a == "--noise") c.noise_ratio = std::stod(value());
  else return false;
  return true;
}

/// Reads the command line: -h/--help prints `usage` and exits 0; every other argument goes to `own(a, value)` (the
/// program's own options, true when it took the argument) and then to parse_common(); an argument neither takes, or a
/// missing value, prints what was wrong and exits 2. `value()` reads the next argument.
inline void parse_args(int argc, char** argv, study_config& c, const std::function<void()>& usage,
                       const std::function<bool(const std::string&, const std::function<std::string()>&)>& own) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::function<std::string()> value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    }
    if (!own(a, value) && !parse_common(c, a, value)) {
      std::fprintf(stderr, "unknown argument '%s'\n", a.c_str());
      usage();
      std::exit(2);
    }
  }
}

/// Help text of the options parse_common() reads.
inline constexpr const char* common_usage =
    "  --seeds N        seeds per method; each seed draws a new base network, change, data and init\n"
    "  --out DIR        output folder\n"
    "  --threads N      runs trained at once (default: the number of cores)\n"
    "  --steps N        optimizer steps per run\n"
    "  --batch N        training sequences per step\n"
    "  --lr X           AdamW learning rate (default 0.01), decayed linearly to 0 unless --constant-lr\n"
    "  --init-r N       AdaLoRA's initial rank per matrix\n"
    "  --tinit N        AdaLoRA warm-up steps (default 10%% of the steps)\n"
    "  --tfinal N       AdaLoRA steps with the final rank pattern (default 30%% of the steps)\n"
    "  --orth X         orthogonal regularizer weight (default 0.1)\n"
    "  --noise X        target noise std relative to the true change's effect\n";

// ---- the task --------------------------------------------------------------------------------------------------

inline matrix gaussian(std::size_t n, double std, std::mt19937_64& rng) {
  std::normal_distribution<double> d(0.0, std);
  matrix m(n);
  for (auto& v : m) v = static_cast<float>(d(rng));
  return m;
}

/// `count` orthonormal vectors of length n (rows of the result), by Gram–Schmidt on Gaussian vectors.
inline std::vector<std::vector<double>> orthonormal(std::size_t count, std::size_t n, std::mt19937_64& rng) {
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

/// One direction of the true change of a matrix: σ u vᵀ.
struct true_direction {
  double sigma;
  std::vector<double> u, v;  // out, in
};

struct task {
  frozen_transformer base, target;
  std::vector<std::vector<true_direction>> change;  // per matrix
  matrix train_x, train_y;
  matrix test_x, test_y, test_y_clean;
  double noise_std = 0.0;
  double base_loss = 0.0;  // held-out loss of the base network without adapters
};

inline double mse(const matrix& a, const matrix& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a[i] - b[i]) * double(a[i] - b[i]);
  return s / double(a.size());
}

/// Output of `net` without adapters, in chunks.
inline matrix plain_output(const frozen_transformer& net, const matrix& x, std::size_t sequences) {
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
inline task make_task(const study_config& c, std::uint64_t seed) {
  std::mt19937_64 rng(0x5eed0000ull + seed);
  const net_shape& s = c.shape;
  std::vector<matrix> base_w, target_w;
  std::vector<std::vector<true_direction>> change(s.matrices());
  for (std::size_t m = 0; m < s.matrices(); ++m) {
    const std::size_t in = s.in_of(m), out = s.out_of(m);
    base_w.push_back(gaussian(out * in, 1.0 / std::sqrt(double(in)), rng));
    matrix w = base_w.back();
    const auto r = static_cast<std::size_t>(c.true_rank[m]);
    auto u = orthonormal(r, out, rng), v = orthonormal(r, in, rng);
    for (std::size_t k = 0; k < r; ++k) {
      const double sigma = c.sigma(m, k);
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) w[o * in + i] += static_cast<float>(sigma * u[k][o] * v[k][i]);
      change[m].push_back({sigma, std::move(u[k]), std::move(v[k])});
    }
    target_w.push_back(std::move(w));
  }
  task t{frozen_transformer(s, base_w), frozen_transformer(s, target_w), std::move(change), {}, {}, {}, {}, {}, 0.0,
         0.0};
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

struct progress {
  std::atomic<std::int64_t> step{-1};
  std::atomic<double> loss{0.0};
  std::atomic<bool> done{false};
};

struct run_result {
  std::size_t method = 0;  // index into the study's methods
  int seed = 0;
  std::int64_t target_r = 0;
  std::vector<std::int64_t> eval_step;
  std::vector<double> eval_loss;
  std::vector<std::int64_t> budget;               // per step (AdaLoRA)
  std::vector<std::int64_t> rank_high, rank_low;  // per step: total rank of the true high-rank / other matrices
  std::vector<std::int64_t> final_rank;           // per matrix
  double final_loss = 0.0, final_excess = 0.0;    // held-out loss vs noisy and clean targets
  double recovery = 0.0;     // mean over the true directions of the share of σ_k the learned change holds (see below)
  std::size_t final_params = 0;  // trainable parameters the adapters keep at the end
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

/// True-direction recovery: for each true direction σ u vᵀ of each matrix, the share uᵀ ΔŴ v / σ of its strength that
/// the learned change ΔŴ holds along it, clamped to [0, 1]; the mean over all true directions.
template <class Adapter>
double direction_recovery(const task& t, std::vector<Adapter>& adapters) {
  double sum = 0.0;
  std::size_t count = 0;
  for (std::size_t m = 0; m < adapters.size(); ++m) {
    if (t.change[m].empty()) continue;
    const std::vector<float> dw = adapters[m].delta_weight();
    const std::size_t in = adapters[m].in_features();
    for (const auto& d : t.change[m]) {
      double along = 0.0;
      for (std::size_t o = 0; o < d.u.size(); ++o) {
        double row = 0.0;
        for (std::size_t i = 0; i < in; ++i) row += double(dw[o * in + i]) * d.v[i];
        along += d.u[o] * row;
      }
      sum += std::clamp(along / d.sigma, 0.0, 1.0);
      ++count;
    }
  }
  return count ? sum / double(count) : 1.0;
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
  r.recovery = direction_recovery(t, adapters);
}

/// LoRA at rank `rank` on every matrix.
inline void run_lora(const study_config& c, const task& t, std::int64_t rank_, run_result& r, progress& prog) {
  std::vector<adalora::lora_adapter<backend>> adapters;
  const auto rank = static_cast<std::size_t>(rank_);
  for (std::size_t m = 0; m < c.shape.matrices(); ++m) {
    adalora::adapter_options o;
    o.lora_alpha = static_cast<double>(rank);  // scaling α/r = 1, as for the SVD adapters
    o.seed = 1000u * static_cast<unsigned>(r.seed) + m;
    adapters.emplace_back(c.shape.in_of(m), c.shape.out_of(m), rank, o);
    r.final_rank.push_back(static_cast<std::int64_t>(rank));
    r.final_params += rank * (c.shape.in_of(m) + c.shape.out_of(m));
  }
  train(c, t, static_cast<std::uint64_t>(r.seed), adapters, {}, {}, r, prog);
}

/// AdaLoRA with the given allocator configuration, metric, schedule and state policy; records the budget and where the
/// rank sits.
template <class Metric, class Schedule, adalora::StatePolicy State = adalora::in_place_state>
void run_adalora(const study_config& c, const task& t, const adalora::adalora_config& cfg, Metric metric,
                 run_result& r, progress& prog) {
  std::vector<adalora::svd_adapter<backend>> adapters;
  for (std::size_t m = 0; m < c.shape.matrices(); ++m)
    adapters.push_back(adalora::svd_adapter<backend>::from_config(c.shape.in_of(m), c.shape.out_of(m), cfg,
                                                                   1000u * static_cast<unsigned>(r.seed) + m));
  adalora::rank_allocator<backend, Metric, Schedule, float, adalora::self_communicator, State> allocator(
      cfg, std::move(metric));
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
  train(c, t, static_cast<std::uint64_t>(r.seed), adapters, regularize, allocate, r, prog);
  r.final_rank = allocator.ranks();
  for (std::size_t m = 0; m < adapters.size(); ++m)
    r.final_params += static_cast<std::size_t>(r.final_rank[m]) * (c.shape.in_of(m) + c.shape.out_of(m) + 1);
}

template <class Metric, adalora::StatePolicy State = adalora::in_place_state>
void run_adalora_with(const study_config& c, const task& t, const method& m, const adalora::adalora_config& cfg,
                      Metric metric, run_result& r, progress& prog) {
  switch (m.schedule) {
    case schedule_kind::cubic: run_adalora<Metric, adalora::cubic_schedule, State>(c, t, cfg, metric, r, prog); break;
    case schedule_kind::linear:
      run_adalora<Metric, adalora::linear_schedule, State>(c, t, cfg, metric, r, prog);
      break;
    case schedule_kind::constant:
      run_adalora<Metric, adalora::constant_schedule, State>(c, t, cfg, metric, r, prog);
      break;
  }
}

/// Trains method `m` at average final rank `target` on seed `seed`'s task.
inline void run_method(const study_config& c, const task& t, const method& m, std::int64_t target, run_result& r,
                       progress& prog) {
  r.target_r = target;
  if (m.lora) return run_lora(c, t, target, r, prog);
  const adalora::adalora_config cfg = adalora_config_for(c, m, target);
  switch (m.metric) {
    case metric_kind::sensitivity_uncertainty:
      if (m.bf16_state)
        return run_adalora_with<adalora::sensitivity_uncertainty, adalora::in_place_bf16_state>(
            c, t, m, cfg, adalora::sensitivity_uncertainty(cfg), r, prog);
      return run_adalora_with(c, t, m, cfg, adalora::sensitivity_uncertainty(cfg), r, prog);
    case metric_kind::sensitivity: return run_adalora_with(c, t, m, cfg, smoothed_sensitivity(cfg), r, prog);
    case metric_kind::magnitude: return run_adalora_with(c, t, m, cfg, adalora::magnitude{}, r, prog);
    case metric_kind::fisher: return run_adalora_with(c, t, m, cfg, fisher_saliency(cfg), r, prog);
    case metric_kind::warmup_sensitivity:
      return run_adalora_with(c, t, m, cfg, one_shot::warmup_sensitivity{}, r, prog);
  }
}

// ---- many runs at once -----------------------------------------------------------------------------------------

/// One run of a study: method index, seed, average final rank.
struct job {
  std::size_t method;
  int seed;
  std::int64_t target_r;
};

/// Trains every job on a pool of `threads` threads (0: the number of cores), showing the runs in flight on one line
/// (or a line per finished run when stderr is not a terminal). Each run is deterministic whatever the order.
inline std::vector<run_result> run_jobs(const study_config& c, const std::vector<task>& tasks,
                                        const std::vector<method>& methods, const std::vector<job>& jobs,
                                        bool show_rank = false) {
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
      run_result& r = results[j];
      r.method = jobs[j].method;
      r.seed = jobs[j].seed;
      try {
        run_method(c, tasks[static_cast<std::size_t>(jobs[j].seed)], methods[jobs[j].method], jobs[j].target_r, r,
                   progs[j]);
      } catch (...) {
        const std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progs[j].done = true;
    }
  };
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);
  auto name = [&](std::size_t j) {
    std::string s = methods[jobs[j].method].short_label;
    if (show_rank) s += " r" + std::to_string(jobs[j].target_r);
    return s;
  };
  const bool tty = isatty(fileno(stderr)) != 0;
  std::size_t reported = 0;
  for (;;) {
    std::size_t done = 0;
    for (const auto& p : progs) done += p.done ? 1u : 0u;
    std::string line;
    for (std::size_t j = 0; j < jobs.size(); ++j)
      if (!progs[j].done && progs[j].step >= 0) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "[%s s%d] %lld/%lld loss %.4f  ", name(j).c_str(), jobs[j].seed,
                      (long long)progs[j].step.load(), (long long)c.steps, progs[j].loss.load());
        line += buf;
      }
    if (tty) {
      std::fprintf(stderr, "\r%s(%zu/%zu done)\033[K", line.c_str(), done, jobs.size());
    } else {
      for (; reported < jobs.size() && progs[reported].done; ++reported)
        std::fprintf(stderr, "[%s seed %d] done: held-out loss %.5f\n", name(reported).c_str(), jobs[reported].seed,
                     results[reported].final_loss);
    }
    std::fflush(stderr);
    if (done == jobs.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
  if (tty) std::fprintf(stderr, "\r\033[K");
  return results;
}

// ---- statistics ------------------------------------------------------------------------------------------------

struct stats {
  double mean = 0, sd = 0, min = 0, max = 0;
};
inline stats summarize(const std::vector<double>& v) {
  stats s;
  if (v.empty()) return s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / double(v.size() - 1)) : 0.0;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  return s;
}

inline std::vector<double> average_ranks(const std::vector<double>& v) {
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
inline double spearman(const std::vector<double>& a, const std::vector<double>& b) {
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
inline std::size_t high_rank_found(const std::vector<int>& true_rank, const std::vector<std::int64_t>& final_rank) {
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
inline double true_rank_covered(const std::vector<int>& true_rank, const std::vector<std::int64_t>& final_rank) {
  double covered = 0, total = 0;
  for (std::size_t m = 0; m < true_rank.size(); ++m) {
    covered += double(std::min<std::int64_t>(final_rank[m], true_rank[m]));
    total += double(true_rank[m]);
  }
  return total > 0 ? covered / total : 1.0;
}

inline std::string seeds_text(int n) { return std::to_string(n) + (n == 1 ? " seed" : " seeds"); }

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace budget_study
