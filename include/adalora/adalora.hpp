// Umbrella header: the CPU-safe parts of adalora (core, allocator, metrics, schedules, Eigen backend).
#pragma once

#include "adalora/adapters/svd_adapter_views.hpp"
#include "adalora/allocation/allocation_phase.hpp"
#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/memory_space.hpp"
#include "adalora/core/view.hpp"
#include "adalora/importance/importance_metric.hpp"
#include "adalora/importance/magnitude.hpp"
#include "adalora/importance/sensitivity_uncertainty.hpp"
#include "adalora/schedules/budget_schedule.hpp"
#include "adalora/schedules/constant.hpp"
#include "adalora/schedules/cubic.hpp"
#include "adalora/schedules/linear.hpp"
