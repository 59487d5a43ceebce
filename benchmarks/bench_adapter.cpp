// bench_adapter: svd_adapter forward+backward per backend, and what AdaLoRA adds to a C++ training step over LoRA.
//
// Benchmarks (names are what --benchmark_filter matches):
//   adapter/<svd|lora>/<shape>/<backend>    forward + backward of one adapter (r 12, 512 tokens), no dropout; the
//                                           shapes of the DeBERTa and LLaMA sets (adapter_pass.hpp)
//   train_step/<mode>/<model>/<backend>     one training step of a small frozen model with an adapter on every layer:
//       lora            lora_adapter, forward, backward, AdamW, zero_grad
//       adalora_update  svd_adapter, + orthogonal regularizer, + rank_allocator.step(t) in its warm-up phase
//                       (importance update only)
//       adalora_mask    the same with a mask step every step (budgeting phase, deltaT = 1, PEFT's default)
//   train_parts/<orth_reg|allocator_update|allocator_mask>/<model>/<backend>   those AdaLoRA-only parts alone
//   <model>: mlp4x768 (4 linear layers 768 → 768) or ffn2x768 (768 → 3072 → 768 → 3072 → 768, two DeBERTa FFNs);
//   batch × seq = 512 tokens, ReLU between layers, MSE loss; the frozen base GEMMs always run through Eigen, the
//   adapters, optimizer, regularizer and allocator through <backend>.
// Counters: flops = adapter GEMM flop/s (6·tokens·r·(in + out) per forward+backward); threads = the threads the
// adapter's GEMMs run on (adapter/...) or Eigen's GEMM threads of the base layers (train_step/...).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/adapters/lora_adapter.hpp"
#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/optim/adamw.hpp"
#include "adapter_pass.hpp"
#include "bench_common.hpp"

namespace {

constexpr std::size_t tokens = bench::pass_tokens;
constexpr std::size_t rank = bench::pass_rank;

template <class B>
using space_t = typename B::memory_space;

// ---- a training step -------------------------------------------------------------------------------------------

enum class mode { lora, adalora_update, adalora_mask };
constexpr const char* mode_name(mode m) {
  return m == mode::lora ? "lora" : m == mode::adalora_update ? "adalora_update" : "adalora_mask";
}

struct model_shape {
  const char* name;
  std::vector<std::size_t> dims;  // layer l maps dims[l] → dims[l + 1]
};

/// A frozen model (base weights, row-major out × in, on the host through Eigen) with an adapter of kind `Adapter`
/// on every layer, trained with AdamW on an MSE loss. With AdaLoRA also the orthogonal regularizer and the
/// allocator (`mask`: every step a mask step; otherwise every step an update-only warm-up step).
template <class B, mode M>
class training_model {
  static constexpr bool svd = M != mode::lora;
  using adapter_t = std::conditional_t<svd, adalora::svd_adapter<B>, adalora::lora_adapter<B>>;
  using S = space_t<B>;

public:
  explicit training_model(const model_shape& shape) : dims_(shape.dims) {
    const std::size_t L = dims_.size() - 1;
    for (std::size_t l = 0; l < L; ++l) {
      const std::size_t in = dims_[l], out = dims_[l + 1];
      std::vector<float> w(out * in);
      bench::fill_uniform(w.data(), w.size(), -1.0f / std::sqrt(float(in)), 1.0f / std::sqrt(float(in)), 100 + l);
      weights_.push_back(std::move(w));
      adapters_.push_back(bench::trained_adapter<B, svd>(in, out, 200 + 10 * l));
    }
    for (std::size_t l = 0; l <= L; ++l) acts_.push_back(bench::uploaded_uniform(be_, tokens * dims_[l], 300 + l, 1.0f));
    target_ = bench::uploaded_uniform(be_, tokens * dims_.back(), 400, 1.0f);
    grad_ = be_.template allocate<float>(tokens * *std::max_element(dims_.begin(), dims_.end()));
    grad_in_ = be_.template allocate<float>(grad_.size());
    std::vector<adalora::parameter_span> params;
    for (auto& a : adapters_)
      for (auto p : a.parameters()) params.push_back(p);
    adalora::adamw_options o;
    o.lr = 1e-4;
    optimizer_.emplace(params, o);
    if constexpr (svd) {
      cfg_.init_r = rank;
      cfg_.target_r = 8;
      cfg_.deltaT = 1;
      cfg_.orth_reg_weight = 0.5;
      cfg_.total_step = std::int64_t{1} << 41;
      if (M == mode::adalora_mask) {
        cfg_.tinit = 0;
        t_ = cfg_.total_step / 2;
      } else {
        cfg_.tinit = std::int64_t{1} << 40;
      }
      allocator_.emplace(cfg_);
      for (std::size_t l = 0; l < L; ++l) {
        allocator_->add_adapter("layer" + std::to_string(l), adapters_[l].allocator_views());
        adapter_ptrs_.push_back(&adapters_[l]);
      }
    }
  }

  /// Only what AdaLoRA adds after backward: the orthogonal regularizer and the allocator step.
  void adalora_extras(bool regularizer, bool allocator) {
    if constexpr (svd) {
      if (regularizer)
        adalora::orthogonal_regularization<B>(std::span<adalora::svd_adapter<B>* const>(adapter_ptrs_),
                                              cfg_.orth_reg_weight);
      if (allocator) benchmark::DoNotOptimize(allocator_->step(t_++));
      be_.synchronize();
    }
  }

  void step() {
    const std::size_t L = dims_.size() - 1;
    adalora::eigen_backend base;  // the frozen base layers: Eigen GEMMs, whatever the adapters' backend
    // forward: z = a Wᵀ + adapter(a); a' = relu(z)
    for (std::size_t l = 0; l < L; ++l) {
      const std::size_t in = dims_[l], out = dims_[l + 1];
      float* z = acts_[l + 1].data();
      base.gemm(adalora::transpose::no, adalora::transpose::yes, tokens, out, in, 1.0f, acts_[l].data(), in,
                weights_[l].data(), in, 0.0f, z, out);
      adapters_[l].forward(adalora::make_matrix_view<S>(static_cast<const float*>(acts_[l].data()), tokens, in),
                           adalora::make_matrix_view<S>(z, tokens, out));
      if (l + 1 < L)
        for (std::size_t i = 0; i < tokens * out; ++i) z[i] = std::max(z[i], 0.0f);
    }
    // dL/dy of the mean squared error
    const std::size_t n_out = tokens * dims_.back();
    const float* y = acts_.back().data();
    const float* t = target_.data();
    float* g = grad_.data();
    for (std::size_t i = 0; i < n_out; ++i) g[i] = 2.0f * (y[i] - t[i]) / static_cast<float>(n_out);
    // backward: dx = dz W (base) + adapter's dx; relu'
    for (std::size_t l = L; l-- > 0;) {
      const std::size_t in = dims_[l], out = dims_[l + 1];
      float* dx = grad_in_.data();
      base.gemm(adalora::transpose::no, adalora::transpose::no, tokens, in, out, 1.0f, grad_.data(), out,
                weights_[l].data(), in, 0.0f, dx, in);
      adapters_[l].backward(adalora::make_matrix_view<S>(static_cast<const float*>(grad_.data()), tokens, out),
                            adalora::make_matrix_view<S>(dx, tokens, in));
      if (l > 0) {
        const float* a = acts_[l].data();
        for (std::size_t i = 0; i < tokens * in; ++i) dx[i] = a[i] > 0.0f ? dx[i] : 0.0f;
      }
      std::swap(grad_, grad_in_);
    }
    if constexpr (svd)
      adalora::orthogonal_regularization<B>(std::span<adalora::svd_adapter<B>* const>(adapter_ptrs_),
                                            cfg_.orth_reg_weight);
    optimizer_->step();
    if constexpr (svd) benchmark::DoNotOptimize(allocator_->step(t_++));
    optimizer_->zero_grad();
    be_.synchronize();
  }

private:
  B be_;
  std::vector<std::size_t> dims_;
  std::vector<std::vector<float>> weights_;
  std::vector<adapter_t> adapters_;
  std::vector<adalora::buffer_t<B, float>> acts_;
  adalora::buffer_t<B, float> target_{}, grad_{}, grad_in_{};
  std::optional<adalora::adamw<B>> optimizer_;
  adalora::adalora_config cfg_;
  std::optional<adalora::rank_allocator<B>> allocator_;
  std::vector<adalora::svd_adapter<B>*> adapter_ptrs_;
  std::int64_t t_ = 0;
};

template <class B, mode M>
void bm_train_step(benchmark::State& st, const model_shape& shape) {
  training_model<B, M> model(shape);
  model.step();  // first step: allocator state, optimizer state, caches
  for (auto _ : st) model.step();
  st.counters["threads"] = Eigen::nbThreads();
}

/// The AdaLoRA-only parts of a step, alone: what they cost is the overhead over LoRA (besides SVD vs LoRA adapters).
template <class B, mode M>
void bm_train_extras(benchmark::State& st, const model_shape& shape, bool regularizer, bool allocator) {
  training_model<B, M> model(shape);
  model.step();
  for (auto _ : st) model.adalora_extras(regularizer, allocator);
}

const std::vector<model_shape>& models() {
  static const std::vector<model_shape> m{{"mlp4x768", {768, 768, 768, 768, 768}},
                                          {"ffn2x768", {768, 3072, 768, 3072, 768}}};
  return m;
}

struct register_backend {
  template <class B>
  void operator()() const {
    const std::string b = B::name;
    // Eigen's GEMMs run on Eigen::nbThreads() (the OpenMP threads when built with OpenMP); the others as their backend
    bench::register_adapter_passes<B>(b == "eigen" ? Eigen::nbThreads() : bench::backend_threads<B>());
    if (b != "eigen" && b != "thrust-omp") return;  // the training step: the CPU reference and the parallel backend
    for (const auto& m : models()) {
      auto reg = [&]<mode M>() {
        benchmark::RegisterBenchmark(("train_step/" + std::string(mode_name(M)) + "/" + m.name + "/" + b).c_str(),
                                     [&m](benchmark::State& st) { bm_train_step<B, M>(st, m); })
            ->UseRealTime()
            ->MinTime(2.0)
            ->Unit(benchmark::kMillisecond);
      };
      reg.template operator()<mode::lora>();
      reg.template operator()<mode::adalora_update>();
      reg.template operator()<mode::adalora_mask>();
      benchmark::RegisterBenchmark(("train_parts/orth_reg/" + std::string(m.name) + "/" + b).c_str(),
                                   [&m](benchmark::State& st) {
                                     bm_train_extras<B, mode::adalora_update>(st, m, true, false);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("train_parts/allocator_update/" + std::string(m.name) + "/" + b).c_str(),
                                   [&m](benchmark::State& st) {
                                     bm_train_extras<B, mode::adalora_update>(st, m, false, true);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("train_parts/allocator_mask/" + std::string(m.name) + "/" + b).c_str(),
                                   [&m](benchmark::State& st) {
                                     bm_train_extras<B, mode::adalora_mask>(st, m, false, true);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
};

void summary(const std::map<std::string, bench::result>& r) {
  auto find = [&](const std::string& n) -> const bench::result* {
    const auto it = r.find(n);
    return it == r.end() ? nullptr : &it->second;
  };
  bool header = false;
  for (const auto& [name, res] : r) {
    if (name.rfind("train_step/lora/", 0) != 0) continue;
    if (!header) {
      std::printf("\nSummary: training step, LoRA vs AdaLoRA (ms per step; overhead over LoRA). Whole steps, then the\n"
                  "AdaLoRA-only parts timed alone (orthogonal regularizer + allocator step) as a share of the LoRA step\n");
      std::printf("%-22s %10s %18s %18s %16s %16s\n", "model/backend", "LoRA", "AdaLoRA update", "AdaLoRA mask",
                  "reg+alloc(upd)", "reg+alloc(mask)");
      header = true;
    }
    const std::string rest = name.substr(std::string("train_step/lora/").size());
    std::printf("%-22s %10.2f", rest.c_str(), res.seconds * 1e3);
    for (const char* m : {"adalora_update", "adalora_mask"}) {
      if (const auto* a = find("train_step/" + std::string(m) + "/" + rest))
        std::printf(" %9.2f (%+5.1f%%)", a->seconds * 1e3, 100.0 * (a->seconds / res.seconds - 1.0));
      else
        std::printf(" %18s", "-");
    }
    const auto* reg = find("train_parts/orth_reg/" + rest);
    for (const char* m : {"allocator_update", "allocator_mask"}) {
      const auto* a = find("train_parts/" + std::string(m) + "/" + rest);
      if (reg && a)
        std::printf(" %7.3f (%5.2f%%)", (reg->seconds + a->seconds) * 1e3,
                    100.0 * (reg->seconds + a->seconds) / res.seconds);
      else
        std::printf(" %16s", "-");
    }
    std::printf("\n");
  }
  bench::print_adapter_summary(r);
}

}  // namespace

int main(int argc, char** argv) {
  bench::for_each_backend(register_backend{});
  return bench::run_main(argc, argv, summary);
}
