// The benchmarks' reporter: Google Benchmark's console output, then a summary table built from every run.
#pragma once

#include <benchmark/benchmark.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace bench {

// ---- a console reporter that also keeps every run for a summary at the end ---------------------------------------

/// One benchmark's result: seconds per iteration (real time) and its counters (rates already per second).
struct result {
  double seconds = 0.0;
  std::map<std::string, double> counters;
};

/// Prints what the ConsoleReporter prints, keeps the results by name (the median when repetitions were asked for),
/// and calls `summary` with them once every benchmark has run.
class summary_reporter : public benchmark::ConsoleReporter {
public:
  using summary_fn = std::function<void(const std::map<std::string, result>&)>;
  explicit summary_reporter(summary_fn summary)
      : benchmark::ConsoleReporter(benchmark::ConsoleReporter::OO_Tabular), summary_(std::move(summary)) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    benchmark::ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median) continue;
      const std::string name = r.run_name.function_name;
      if (!median && medians_.count(name)) continue;
      result res;
      res.seconds = r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit);
      for (const auto& [k, c] : r.counters) res.counters[k] = c.value;
      results_[name] = res;
      if (median) medians_.insert(name);
    }
  }

  void Finalize() override {
    benchmark::ConsoleReporter::Finalize();
    if (summary_ && !results_.empty()) summary_(results_);
  }

private:
  summary_fn summary_;
  std::map<std::string, result> results_;
  std::set<std::string> medians_;
};

/// Runs the registered benchmarks with the summary reporter; the usual Google Benchmark flags apply.
inline int run_main(int argc, char** argv, summary_reporter::summary_fn summary) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  summary_reporter reporter(std::move(summary));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
