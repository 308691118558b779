// What a model does differently when its batch is shared among processes (data_parallel): the
// rows this process takes, sums over every process, which process writes files, the
// configuration compile() compares, and telling the others of a failure. Under every other
// accumulation policy each of these is the single-process answer, chosen at compile time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string_view>
#include <typeinfo>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/distributed/communicator.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/step/objective.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise::detail {

/// The per-process answers of a model under accumulation policy `Accum`: those of data_parallel
/// when it shares its batch among processes, the single-process ones otherwise.
template <class Accum>
struct processes {
    /// The rows of `rows` this process trains or scores: all of them unless the policy shares.
    static row_range shard(const Accum& policy, std::size_t rows) {
        if constexpr (ShardingAccumulation<Accum>) {
            return policy.shard(rows);
        } else {
            return {0, rows};
        }
    }

    /// Rank 0 writes files and shows progress; every process holds the same state.
    static bool is_chief(const Accum& policy) {
        if constexpr (ShardingAccumulation<Accum>) {
            return policy.communicator().rank() == 0;
        } else {
            return true;
        }
    }

    /// Loss and metric sums of every process.
    static void reduce_sums(Accum& policy, step_sums& sums) {
        if constexpr (requires(std::span<double> v) { policy.reduce_sums(v); }) {
            std::array<double, logs::max_metrics + 2> v{};
            v[0] = sums.loss;
            for (std::size_t m = 0; m < logs::max_metrics; ++m) v[m + 1] = sums.metrics[m];
            v[logs::max_metrics + 1] = static_cast<double>(sums.samples);
            policy.reduce_sums(v);
            sums.loss = v[0];
            for (std::size_t m = 0; m < logs::max_metrics; ++m) sums.metrics[m] = v[m + 1];
            sums.samples = static_cast<std::size_t>(v[logs::max_metrics + 1]);
        }
    }

    /// Runs f; an exception thrown in it is announced to the other processes first, so that
    /// they stop with distributed_error instead of waiting for this one in the step's all-reduce.
    template <class F>
    static decltype(auto) guarded(Accum& policy, F&& f) {
        if constexpr (requires(std::string_view w) { policy.announce_failure(w); }) {
            try {
                return f();
            } catch (const std::exception& e) {
                policy.announce_failure(e.what());
                throw;
            }
        } else {
            return f();
        }
    }

    /// compile()'s check that every process made the same call: a fingerprint of the model's,
    /// optimizer's, loss's and metrics' types, the learning rate and the seed, compared by the
    /// policy with the weights' hash. Not announced on failure: every process sees the same
    /// gathered values and raises the same error.
    template <class Exec, class Model, class Optimizer, class Loss, class... Metrics>
    static void attach(Accum& policy, const variable_set& vars, float learning_rate, std::uint64_t seed) {
        if constexpr (requires(std::uint64_t c) { policy.template attach<Exec>(vars, c); }) {
            fnv1a config;
            for (std::string_view name : {std::string_view(typeid(Model).name()),
                                          std::string_view(typeid(Optimizer).name()),
                                          std::string_view(typeid(Loss).name()),
                                          std::string_view(typeid(Metrics).name())...}) {
                config.add(name);
            }
            config.add_value(learning_rate);
            config.add_value(seed);
            policy.template attach<Exec>(vars, config.value);
        }
    }
};

}  // namespace batchwise::detail
