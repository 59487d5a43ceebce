// budget_study: a controlled fine-tuning study where the answer is known — LoRA vs AdaLoRA at the same budget.
//
// A frozen base transformer (network.hpp) is fine-tuned towards a target network that differs from it by a true
// low-rank change of a different rank in each of its matrices (most need rank 0 or 1, a few need 6–8), with noise
// on the targets (study.hpp). At the same final budget (an average rank of target_r per matrix) we train
//   (a) LoRA at rank target_r on every matrix,
//   (b) AdaLoRA from init_r down to the budget with the default sensitivity × uncertainty importance,
//   (c) AdaLoRA with the magnitude importance (the paper's ablation),
// (or any methods of study.hpp's catalogue, --methods) over several seeds, and report the held-out loss of each and
// how well AdaLoRA recovered the true ranks. budget_sweep.cpp varies the budget, the metric and the schedule.
//
// Writes results.csv, ranks.csv, curves.csv, budget.csv, summary.json and three SVG pictures into --out.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "study.hpp"
#include "svg.hpp"

namespace budget_study {
namespace {

// The true rank of the change in every matrix, one row per block: q k v o up down.
constexpr int default_ranks[4][6] = {{1, 0, 7, 0, 1, 0}, {0, 1, 0, 1, 8, 0}, {1, 0, 1, 0, 0, 6}, {0, 1, 0, 7, 1, 0}};
constexpr int large_ranks[6][6] = {{1, 0, 0, 1, 8, 0}, {0, 1, 7, 0, 0, 1}, {1, 0, 0, 0, 1, 6},
                                   {0, 0, 1, 8, 0, 1}, {0, 1, 0, 0, 7, 0}, {1, 0, 6, 1, 0, 0}};

struct options {
  study_config study;
  std::vector<method> methods;
  bool large = false;

  bool runs(const std::string& key) const {
    return std::any_of(methods.begin(), methods.end(), [&](const method& m) { return m.key == key; });
  }
  std::size_t index_of(const std::string& key) const {
    return static_cast<std::size_t>(
        std::find_if(methods.begin(), methods.end(), [&](const method& m) { return m.key == key; }) - methods.begin());
  }
};

void usage() {
  std::printf(
      "budget_study: LoRA vs AdaLoRA at the same rank budget on a task whose answer is known.\n"
      "usage: budget_study [--seeds N] [--out DIR] [--large] [options]\n"
      "  --large          a larger network (6 blocks, d_model 128, d_ff 256) and 1500 steps\n"
      "  --target-r N     the budget: average final rank per matrix, and LoRA's rank (default 2)\n"
      "  --methods LIST   comma-separated, from lora,adalora,adalora_sensitivity,adalora_magnitude,adalora_fisher,\n"
      "                   one_shot, adalora_bf16 (AdaLoRA with bfloat16 importance state; default\n"
      "                   lora,adalora,adalora_magnitude)\n"
      "%s"
      "defaults: 3 seeds, out budget_study_out, 1000 steps, init_r 10, noise 0.5\n",
      common_usage);
}

options parse(int argc, char** argv) {
  options o;
  study_config& c = o.study;
  c.out = "budget_study_out";
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--large") o.large = true;
  if (o.large) {
    c.shape = {128, 256, 6, 8, 4};
    c.steps = 1500;
    c.train_seqs = 4096;
  }
  for (const char* key : {"lora", "adalora", "adalora_magnitude"}) o.methods.push_back(find_method(key));
  parse_args(argc, argv, c, usage, [&](const std::string& a, const std::function<std::string()>& value) {
    if (a == "--large") return true;  // read above
    if (a == "--target-r") {
      c.target_r = std::stoll(value());
    } else if (a == "--methods") {
      o.methods.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) o.methods.push_back(find_method(item));
    } else {
      return false;
    }
    return true;
  });
  if (o.large)
    c.finish(large_ranks);
  else
    c.finish(default_ranks);
  return o;
}

/// The per-seed results of one method.
struct method_summary {
  std::vector<double> loss, excess, rho, found, covered;
  std::vector<double> mean_rank;  // per matrix, over seeds
};

// ---- pictures --------------------------------------------------------------------------------------------------

void write_pictures(const options& opt, const std::vector<run_result>& runs,
                    const std::vector<method_summary>& ms, std::size_t k_high,
                    const std::vector<double>& noise_floors, double base_loss, const std::string& dir) {
  const study_config& c = opt.study;
  const auto floors = summarize(noise_floors);
  const double noise_floor = floors.mean;
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
      if (!opt.methods[r.method].lora) {
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
      svg::series lora{"LoRA budget (fixed)", find_method("lora").color, {0.0, double(c.steps)},
                       {double(c.target_r * std::int64_t(c.shape.matrices())),
                        double(c.target_r * std::int64_t(c.shape.matrices()))},
                       {}, {}, true, false, 2.0};
      ch.lines.push_back(lora);
      for (std::size_t m = 0; m < opt.methods.size(); ++m) {
        if (opt.methods[m].lora) continue;
        for (int which = 0; which < 2; ++which) {
          svg::series s;
          s.label = opt.methods[m].short_label +
                    (which == 0 ? ": rank in the true rank " + high_range + " matrices" : ": rank in the other matrices");
          s.color = opt.methods[m].color;
          s.dashed = which == 1;
          s.width = 1.8;
          s.step_shape = true;
          std::size_t count = 0;
          for (const auto& r : runs) {
            if (r.method != m) continue;
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
    for (std::size_t m = 0; m < opt.methods.size(); ++m) {
      svg::series s;
      s.label = opt.methods[m].pretty;
      s.color = opt.methods[m].color;
      s.dashed = opt.methods[m].key == "adalora_magnitude";  // it often lies on top of the other AdaLoRA curve
      std::vector<std::vector<double>> per_point;
      for (const auto& r : runs) {
        if (r.method != m) continue;
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
    for (std::size_t m = 0; m < opt.methods.size(); ++m) {
      const auto& sm = ms[m];
      svg::heatmap_panel p{opt.methods[m].lora ? "LoRA, rank " + std::to_string(c.target_r) + " everywhere"
                                               : opt.methods[m].pretty,
                           sm.mean_rank,
                           {},
                           {}};
      for (double v : p.values)
        p.cell_text.push_back(std::abs(v - std::round(v)) < 1e-9 ? std::to_string(int(std::lround(v)))
                                                                 : fmt("%.1f", v));
      const auto l = summarize(sm.loss);
      p.footer.push_back("held-out MSE " + fmt("%.4f", l.mean) + " \u00b1 " + fmt("%.4f", l.sd));
      if (opt.methods[m].lora) {
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
  const options opt = parse(argc, argv);
  const study_config& c = opt.study;
  for (const auto& m : opt.methods)  // fail early on an invalid AdaLoRA configuration, not inside a worker thread
    if (!m.lora) adalora_config_for(c, m, c.target_r).validate();
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
  std::vector<job> jobs;
  for (int s = 0; s < c.seeds; ++s)
    for (std::size_t m = 0; m < opt.methods.size(); ++m) jobs.push_back({m, s, c.target_r});
  const std::vector<run_result> results = run_jobs(c, tasks, opt.methods, jobs);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // ---- tables ----
  const std::string& dir = c.out;
  std::vector<double> true_d(c.true_rank.begin(), c.true_rank.end());
  std::ofstream res(dir + "/results.csv"), ranks(dir + "/ranks.csv"), curves(dir + "/curves.csv"),
      budget(dir + "/budget.csv");
  res << "method,seed,held_out_loss,held_out_excess_loss,noise_floor,base_loss,spearman_vs_true_rank,"
         "high_rank_found,high_rank_total,true_rank_covered,direction_recovery,final_trainable_params,seconds\n";
  ranks << "method,seed,matrix,block,projection,true_rank,final_rank\n";
  curves << "method,seed,step,held_out_loss\n";
  std::vector<method_summary> ms(opt.methods.size());
  for (const auto& r : results) {
    const auto& t = tasks[static_cast<std::size_t>(r.seed)];
    const method& how = opt.methods[r.method];
    auto& s = ms[r.method];
    const double rho =
        how.lora ? 0.0 : spearman(true_d, std::vector<double>(r.final_rank.begin(), r.final_rank.end()));
    const std::size_t found = high_rank_found(c.true_rank, r.final_rank);
    const double covered = true_rank_covered(c.true_rank, r.final_rank);
    s.loss.push_back(r.final_loss);
    s.excess.push_back(r.final_excess);
    s.covered.push_back(covered);
    if (!how.lora) {
      s.rho.push_back(rho);
      s.found.push_back(double(found));
    }
    if (s.mean_rank.empty()) s.mean_rank.assign(r.final_rank.size(), 0.0);
    for (std::size_t m = 0; m < r.final_rank.size(); ++m) s.mean_rank[m] += double(r.final_rank[m]) / c.seeds;
    res << how.key << "," << r.seed << "," << fmt("%.6f", r.final_loss) << "," << fmt("%.6f", r.final_excess) << ","
        << fmt("%.6f", t.noise_std * t.noise_std) << "," << fmt("%.6f", t.base_loss) << ","
        << (how.lora ? "" : fmt("%.4f", rho)) << "," << (how.lora ? "" : std::to_string(found)) << "," << k_high
        << "," << fmt("%.4f", covered) << "," << fmt("%.4f", r.recovery) << "," << r.final_params << ","
        << fmt("%.1f", r.seconds) << "\n";
    for (std::size_t m = 0; m < r.final_rank.size(); ++m)
      ranks << how.key << "," << r.seed << "," << c.shape.name_of(m) << "," << m / projections_per_block << ","
            << projection_names[m % projections_per_block] << "," << c.true_rank[m] << "," << r.final_rank[m] << "\n";
    for (std::size_t i = 0; i < r.eval_step.size(); ++i)
      curves << how.key << "," << r.seed << "," << r.eval_step[i] << "," << fmt("%.6f", r.eval_loss[i]) << "\n";
  }
  // budget.csv: the schedule and where the rank sits, seed 0
  {
    const run_result *su = nullptr, *mag = nullptr;
    for (const auto& r : results) {
      if (r.seed != 0) continue;
      if (opt.methods[r.method].key == "adalora") su = &r;
      if (opt.methods[r.method].key == "adalora_magnitude") mag = &r;
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
  // paired differences: LoRA − method per seed (results are in job order: seed-major, so ms[m].loss[s] is seed s)
  const bool with_lora = opt.runs("lora");
  const std::size_t lora_index = opt.index_of("lora");
  std::vector<std::vector<double>> diff(opt.methods.size());
  if (with_lora)
    for (std::size_t m = 0; m < opt.methods.size(); ++m)
      if (!opt.methods[m].lora)
        for (int s = 0; s < c.seeds; ++s)
          diff[m].push_back(ms[lora_index].loss[std::size_t(s)] - ms[m].loss[std::size_t(s)]);

  std::ofstream js(dir + "/summary.json");
  js << "{\n  \"config\": {\"blocks\": " << c.shape.blocks << ", \"d_model\": " << c.shape.d_model
     << ", \"d_ff\": " << c.shape.d_ff << ", \"seq_len\": " << c.shape.seq_len << ", \"matrices\": "
     << c.shape.matrices() << ", \"steps\": " << c.steps << ", \"batch\": " << c.batch << ", \"lr\": " << c.lr
     << ", \"init_r\": " << c.init_r << ", \"target_r\": " << c.target_r << ", \"tinit\": " << c.tinit
     << ", \"tfinal\": " << c.tfinal << ", \"deltaT\": " << c.deltaT << ", \"orth_reg_weight\": "
     << c.orth_reg_weight << ", \"noise_ratio\": " << c.noise_ratio << ", \"lr_decay\": "
     << (c.lr_decay ? "\"linear\"" : "\"constant\"") << ", \"seeds\": " << c.seeds << "},\n";
  js << "  \"true_rank\": [";
  for (std::size_t m = 0; m < c.true_rank.size(); ++m) js << (m ? ", " : "") << c.true_rank[m];
  js << "],\n  \"noise_floor\": " << fmt("%.6f", noise_floor) << ",\n  \"base_loss\": " << fmt("%.6f", base_loss)
     << ",\n  \"seconds\": " << fmt("%.1f", seconds) << ",\n  \"methods\": {\n";
  for (std::size_t m = 0; m < opt.methods.size(); ++m) {
    const auto& s = ms[m];
    const auto l = summarize(s.loss), e = summarize(s.excess);
    js << "    \"" << opt.methods[m].key << "\": {\"held_out_loss\": {\"mean\": " << fmt("%.6f", l.mean)
       << ", \"sd\": " << fmt("%.6f", l.sd) << ", \"min\": " << fmt("%.6f", l.min) << ", \"max\": "
       << fmt("%.6f", l.max) << "}, \"held_out_excess_loss\": {\"mean\": " << fmt("%.6f", e.mean)
       << ", \"sd\": " << fmt("%.6f", e.sd) << "}, \"true_rank_covered\": {\"mean\": "
       << fmt("%.4f", summarize(s.covered).mean) << "}";
    if (!opt.methods[m].lora) {
      const auto r = summarize(s.rho), f = summarize(s.found);
      js << ", \"spearman\": {\"mean\": " << fmt("%.4f", r.mean) << ", \"sd\": " << fmt("%.4f", r.sd)
         << "}, \"high_rank_found\": {\"mean\": " << fmt("%.3f", f.mean) << ", \"of\": " << k_high << "}";
      if (with_lora) {
        const auto d = summarize(diff[m]);
        js << ", \"lora_minus_this\": {\"mean\": " << fmt("%.6f", d.mean) << ", \"sd\": " << fmt("%.6f", d.sd)
           << ", \"min\": " << fmt("%.6f", d.min) << "}";
      }
    }
    js << ", \"mean_final_rank\": [";
    for (std::size_t i = 0; i < s.mean_rank.size(); ++i) js << (i ? ", " : "") << fmt("%.3f", s.mean_rank[i]);
    js << "]}" << (m + 1 == opt.methods.size() ? "\n" : ",\n");
  }
  js << "  }\n}\n";

  std::vector<double> noise_floors;
  for (const auto& t : tasks) noise_floors.push_back(t.noise_std * t.noise_std);
  write_pictures(opt, results, ms, k_high, noise_floors, base_loss, dir);

  // ---- the report ----
  std::printf("\nheld-out MSE after %lld steps (base network: %.5f, noise floor: %.5f), over %s:\n",
              (long long)c.steps, base_loss, noise_floor, seeds_text(c.seeds).c_str());
  std::printf("  %-40s %-22s %-19s %-10s %-15s %s\n", "method", "loss mean +- sd", "[min, max]", "covered",
              "Spearman rho", "high-rank found");
  for (std::size_t m = 0; m < opt.methods.size(); ++m) {
    const auto& s = ms[m];
    const auto l = summarize(s.loss);
    std::printf("  %-40s %.5f +- %.5f     [%.5f, %.5f]  %5.1f%%    ", opt.methods[m].label.c_str(), l.mean, l.sd,
                l.min, l.max, 100.0 * summarize(s.covered).mean);
    if (opt.methods[m].lora) {
      std::printf("-               -\n");
    } else {
      const auto r = summarize(s.rho), f = summarize(s.found);
      std::printf("%.3f +- %.3f   %.2f of %zu\n", r.mean, r.sd, f.mean, k_high);
    }
  }
  for (std::size_t m = 0; m < opt.methods.size(); ++m) {
    if (opt.methods[m].lora || !with_lora) continue;
    const auto& d = diff[m];
    const auto st = summarize(d);
    const auto wins = std::count_if(d.begin(), d.end(), [](double v) { return v > 0; });
    std::printf("  LoRA - %s, paired by seed: %+.5f +- %.5f (lower for %s on %lld of %d seeds)\n",
                opt.methods[m].short_label.c_str(), st.mean, st.sd, opt.methods[m].short_label.c_str(),
                (long long)wins, c.seeds);
  }
  if (opt.runs("adalora") && opt.runs("adalora_bf16")) {
    // the same runs but for the importance state's precision (adalora::in_place_bf16_state against the float32
    // default): seed by seed, the held-out loss and the final ranks
    const std::size_t f32_index = opt.index_of("adalora"), bf16_index = opt.index_of("adalora_bf16");
    std::vector<double> d;
    std::size_t matrices_differ = 0, ranks_moved = 0;
    for (int seed = 0; seed < c.seeds; ++seed) {
      const run_result *f32 = nullptr, *bf16 = nullptr;
      for (const auto& r : results) {
        if (r.seed == seed && r.method == f32_index) f32 = &r;
        if (r.seed == seed && r.method == bf16_index) bf16 = &r;
      }
      if (!f32 || !bf16) continue;
      d.push_back(bf16->final_loss - f32->final_loss);
      for (std::size_t m = 0; m < f32->final_rank.size(); ++m) {
        const auto delta = std::abs(bf16->final_rank[m] - f32->final_rank[m]);
        matrices_differ += delta != 0 ? 1u : 0u;
        ranks_moved += static_cast<std::size_t>(delta);
      }
    }
    const auto st = summarize(d);
    std::printf("  AdaLoRA bfloat16 state - float32 state, paired by seed: %+.5f +- %.5f [%+.5f, %+.5f]; final ranks "
                "differ in %zu of %zu matrices over all seeds (%zu ranks moved in all)\n",
                st.mean, st.sd, st.min, st.max, matrices_differ, c.shape.matrices() * d.size(), ranks_moved);
  }
  std::printf("\nmean final rank per matrix (true rank in brackets; the AdaLoRA methods in order):\n  %-8s", "");
  for (const char* n : projection_names) std::printf("%-26s", n);
  for (std::size_t b = 0; b < c.shape.blocks; ++b) {
    std::printf("\n  block %zu ", b);
    for (std::size_t p = 0; p < projections_per_block; ++p) {
      const std::size_t m = b * projections_per_block + p;
      std::string cell = "[" + std::to_string(c.true_rank[m]) + "]";
      for (std::size_t k = 0; k < opt.methods.size(); ++k)
        if (!opt.methods[k].lora) cell += " " + fmt("%.1f", ms[k].mean_rank[m]);
      std::printf("%-26s", cell.c_str());
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
