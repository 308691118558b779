// The accumulation window: the micro-batches of one optimizer step, their gradient sums, and
// finish(), the one path every optimizer step takes, however the step is executed.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/core/config.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/step/optimizer_state.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise {

/// Sees the gradient sums of every optimizer step after the accumulation policy's reduction and
/// before the optimizer: gradient statistics (the noise scale), clipping (which may rescale
/// them). Registered with Model::add_step_observer; an observer needs every gradient, so while
/// one is registered no step is folded into the weight-gradient GEMM.
class step_observer {
public:
    virtual ~step_observer() = default;
    /// Called at every optimizer step with its gradient sums, after the policy's reduction and
    /// before the optimizer reads them; it may rescale them (clipping). An exception abandons the
    /// step: nothing of it is applied.
    virtual void observe(step_gradients& g) = 0;
    /// Whether it also wants each micro-batch's own gradient sum (observe_micro_batch). While
    /// such an observer is registered, a window sums its micro-batches' gradients in a buffer of
    /// its own instead of in the backward GEMMs (the same sums, rounded in another order).
    [[nodiscard]] virtual bool observes_micro_batches() const { return false; }
    /// One micro-batch's gradient sums over its `samples` samples, as soon as they are computed.
    /// Not called when the policy spans processes (the sums would be this process's alone).
    virtual void observe_micro_batch(std::span<const gradient_buffer> /*sums*/, std::size_t /*samples*/,
                                     const second_moment_view& /*moments*/) {}
    /// The open window was abandoned without a step (a non-finite loss, loss_and_gradients):
    /// what observe_micro_batch saw of it does not count.
    virtual void discarded() {}
    /// Adds its values to the epoch's logs (History, CsvLogger): fit calls it at every epoch end.
    virtual void add_epoch_values(epoch_logs& /*logs*/) {}
};

namespace detail {

/// Functors that add a micro-batch's gradient into a sum of its own (float, double or
/// Kahan-compensated), and write the sum back as the float gradient the optimizer reads.
template <class T>
struct accumulate_sum {
    const float* g;
    T* sum;
    bool first;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { sum[i] = first ? g[i] : sum[i] + g[i]; }
};
struct accumulate_kahan {
    const float* g;
    float* sum;
    float* compensation;
    bool first;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        if (first) {
            sum[i] = g[i];
            compensation[i] = 0.0f;
            return;
        }
        const float y = g[i] - compensation[i];
        const float t = sum[i] + y;
        compensation[i] = (t - sum[i]) - y;
        sum[i] = t;
    }
};
template <class T>
struct write_back_sum {
    const T* sum;
    float* g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { g[i] = static_cast<float>(sum[i]); }
};

/// The update of a step executed eagerly: the optimizer over every variable the GEMM did not
/// already update, then the layers' end-of-step work.
struct eager_update {};

}  // namespace detail

/// The contributions of this class are: 1. it says when the open window is complete (by
/// micro-batches or samples, fixed or set at run time); 2. it sums gradients across its
/// micro-batches in the policy's accumulator type; 3. finish() runs the end of every optimizer
/// step in one order: the policy's reduction hook, the step observers, the optimizer update
/// divided by the effective sample count, the layers' end_step, the step counter; 4. it
/// decides which ways of executing a step the policies allow (the in-GEMM update, capture).
template <ExecutionPolicy Exec, AccumulationPolicy Accum>
class step_window {
public:
    /// What micro-batch gradients are summed in: float, double or compensated_float (the policy's
    /// choice).
    using accumulator_type = typename Accum::accumulator_type;
    /// Whether the sums are the float gradients themselves, with no accumulator of their own.
    static constexpr bool float_sums = std::is_same_v<accumulator_type, float>;
    /// Extra floats the accumulators hold per trainable parameter (for memory estimates).
    static constexpr std::size_t accumulator_floats_per_parameter = float_sums ? 0 : 2;

    step_window() = default;
    /// Reserves the accumulators for the trainable variables of `vars` (none for float sums).
    explicit step_window(const variable_set& vars) {
        if constexpr (std::is_same_v<accumulator_type, double>) {
            doubles_.resize(vars.size());
            for (std::size_t i = 0; i < vars.size(); ++i) {
                if (vars[i].ref.trainable()) Exec::reserve(doubles_[i], vars[i].ref.size());
            }
        } else if constexpr (std::is_same_v<accumulator_type, compensated_float>) {
            kahan_.resize(vars.size());
            for (std::size_t i = 0; i < vars.size(); ++i) {
                if (!vars[i].ref.trainable()) continue;
                Exec::reserve(kahan_[i].first, vars[i].ref.size());
                Exec::reserve(kahan_[i].second, vars[i].ref.size());
            }
        }
    }

    // ---- size of a window ---------------------------------------------------------------------

    /// accumulate_runtime's window; the caller steps an open window first.
    void set_size(accumulation_window w) { size_ = w; }
    /// Samples that make a window; 0 when it is counted in micro-batches.
    [[nodiscard]] std::size_t target_samples() const { return Accum::runtime ? size_.samples : Accum::samples; }
    /// Micro-batches that make a window when it is not counted in samples.
    [[nodiscard]] std::size_t target_micro_batches() const {
        return Accum::runtime ? size_.micro_batches : Accum::micro_batches;
    }
    /// Samples that still fit in the open window (unbounded when it counts micro-batches).
    [[nodiscard]] std::size_t room() const {
        const std::size_t t = target_samples();
        return t == 0 ? std::numeric_limits<std::size_t>::max() : t - samples_;
    }
    /// Whether `rows` rows alone make the next optimizer step.
    [[nodiscard]] bool whole_step(std::size_t rows) const {
        const std::size_t t = target_samples();
        return samples_ == 0 && !has_grads_ && (t != 0 ? rows == t : batches_ + 1 >= target_micro_batches());
    }
    /// Whether a window counted in samples has all of them.
    [[nodiscard]] bool full_by_samples() const { return target_samples() != 0 && samples_ == target_samples(); }
    /// One call's worth of rows (a dataset batch, a train_on_batch) has been fed; returns whether
    /// that completes a window counted in micro-batches.
    bool count_micro_batch() {
        ++batches_;
        return target_samples() == 0 && batches_ >= target_micro_batches();
    }

    // ---- state of the open window ---------------------------------------------------------------

    /// Whether the window holds rows not yet stepped.
    [[nodiscard]] bool open() const { return samples_ > 0; }
    /// Rows of the open window, on every process together.
    [[nodiscard]] std::size_t samples() const { return samples_; }
    /// No micro-batch has written gradients yet: the next one begins the step (and overwrites).
    [[nodiscard]] bool starts_step() const { return !has_grads_; }
    /// Whether the next backward pass adds to the gradients instead of overwriting them.
    [[nodiscard]] bool backward_accumulates() const { return float_sums && has_grads_ && !separating(); }

    /// Whether a micro-batch that is a whole step may fold plain SGD into its gradient GEMM: the
    /// sums must be the float gradients themselves, the policy must not need the kernels'
    /// gradients, and no observer may be waiting for them.
    [[nodiscard]] bool allows_update_in_gemm() const {
        return float_sums && permits_update_in_gemm<Accum, Exec> && observers_.empty();
    }
    /// Whether a step may be replayed from captured graphs under these policies.
    static constexpr bool allows_capture = float_sums && permits_capture<Accum>;
    /// Whether the captured update must be a graph of its own, after host code has seen the
    /// gradients (a reduction hook, observers), rather than the tail of the backward graph.
    [[nodiscard]] bool update_after_host() const {
        return ReducingAccumulation<Accum, Exec> || !observers_.empty();
    }

    /// A micro-batch of n rows has written its gradients (`updated_in_gemm`: and updated the
    /// variables its layers update in the GEMM).
    void add(const variable_set& vars, const optimizer_state<Exec>& opt, std::size_t n, bool updated_in_gemm = false) {
        if (separating()) {
            const second_moment_view moments = opt.second_moments();
            for (step_observer* o : observers_) {
                if (o->observes_micro_batches()) o->observe_micro_batch(vars.gradients(false), n, moments);
            }
        }
        if constexpr (!float_sums) {
            add_to_accumulators(vars, !has_grads_);
        } else if (separating()) {
            add_to_floats(vars, !has_grads_);
        }
        has_grads_ = true;
        in_gemm_ = in_gemm_ || updated_in_gemm;
        samples_ += n;
        local_ += n;
    }
    /// n rows of the window that other processes train (ShardingAccumulation): they count
    /// towards the window's size, not towards this process's gradient sums.
    void add_remote(std::size_t n) { samples_ += n; }

    /// Double or compensated sums back into the float gradients the optimizer reads.
    void write_back(const variable_set& vars) {
        if constexpr (float_sums) {
            if (!has_grads_ || !separating()) return;
            for (std::size_t i = 0; i < vars.size(); ++i) {
                if (vars[i].ref.trainable()) Exec::copy(Exec::data(floats_[i]), vars[i].ref.size(), vars[i].ref.grad);
            }
        } else {
            if (!has_grads_) return;
            for (std::size_t i = 0; i < vars.size(); ++i) {
                const variable_ref& v = vars[i].ref;
                if (!v.trainable()) continue;
                if constexpr (std::is_same_v<accumulator_type, double>) {
                    Exec::for_each(v.size(), detail::write_back_sum<double>{Exec::data(doubles_[i]), v.grad});
                } else {
                    Exec::for_each(v.size(), detail::write_back_sum<float>{Exec::data(kahan_[i].first), v.grad});
                }
            }
        }
    }

    /// Forgets the open window: nothing of it is applied.
    void discard() {
        const bool had_grads = has_grads_;
        reset();
        if (had_grads) {
            for (step_observer* o : observers_) o->discarded();
        }
    }

    /// Ready for the next window.
    void reset() {
        in_gemm_ = false;
        samples_ = 0;
        local_ = 0;
        batches_ = 0;
        has_grads_ = false;
    }

    // ---- the end of a step --------------------------------------------------------------------

    /// The optimizer step of the open window, executed eagerly. Returns false when no window was
    /// open.
    template <class Network>
    bool finish(Network& net, optimizer_state<Exec>& opt, const variable_set& vars) {
        return finish(net, opt, vars, detail::eager_update{});
    }

    /// The optimizer step of the open window. `update(const step_gradients&)` executes the
    /// optimizer update and the layers' end_step in a way of its own (a captured graph), or
    /// detail::eager_update runs them here. Everything else is the same on every path.
    template <class Network, class Update>
    bool finish(Network& net, optimizer_state<Exec>& opt, const variable_set& vars, Update&& update) {
        if (samples_ == 0) {
            batches_ = 0;
            return false;
        }
        write_back(vars);
        if constexpr (ShardingAccumulation<Accum>) {
            if (!has_grads_) {
                // A process that trained none of a shared window's rows adds zeros.
                for (std::size_t i = 0; i < vars.size(); ++i) {
                    if (vars[i].ref.trainable()) Exec::fill(vars[i].ref.grad, vars[i].ref.size(), 0.0f);
                }
                net.begin_step();
            }
        }
        step_gradients g{vars.gradients(in_gemm_), local_, opt.iterations() + 1, in_gemm_};
        if constexpr (reduces_layer_statistics<Accum>) {
            net.step_statistics(statistics_);
            g.statistics = statistics_;
        }
        if constexpr (ReducingAccumulation<Accum, Exec>) policy_.template reduce<Exec>(g);
        if constexpr (ShardingAccumulation<Accum>) {
            if (g.samples != samples_) {
                const std::size_t expected = samples_;
                discard();
                throw distributed_error(
                    "data_parallel: the processes trained " + std::to_string(g.samples) + " samples in optimizer step " +
                    std::to_string(g.step) + " but this process expected " + std::to_string(expected) +
                    " (the processes must read the same dataset with the same batch sizes, seed and shares)");
            }
        }
        if (g.samples == 0) {
            discard();
            throw usage_error("the accumulation policy's reduction left no samples for optimizer step " +
                              std::to_string(g.step));
        }
        if constexpr (reduces_layer_statistics<Accum>) net.set_step_statistics(g.samples);
        try {
            // The second moments the micro-batches were observed with: those before this step's
            // decays are set.
            if (!observers_.empty()) g.second_moments = opt.second_moments();
            opt.begin_step(g.samples);
            for (step_observer* o : observers_) o->observe(g);
        } catch (...) {
            discard();  // nothing of this step is applied
            throw;
        }
        if constexpr (std::is_same_v<std::decay_t<Update>, detail::eager_update>) {
            const float scale = 1.0f / static_cast<float>(g.samples);
            for (std::size_t i = 0; i < vars.size(); ++i) {
                const variable_entry& v = vars[i];
                if (v.ref.trainable() && !(in_gemm_ && v.updatable_in_gemm)) opt.apply(i, v.ref, scale);
            }
            net.end_step();
        } else {
            update(std::as_const(g));
        }
        opt.count_step();
        reset();
        return true;
    }

    // ---- policy and observers -------------------------------------------------------------------

    /// The accumulation policy object, whose reduction hook runs in finish().
    [[nodiscard]] Accum& policy() { return policy_; }
    /// The accumulation policy object.
    [[nodiscard]] const Accum& policy() const { return policy_; }

    /// Registers an observer; one that observes micro-batches gets float sums of their own
    /// (allocated here, not in a step). Not while a window is open.
    void add_observer(step_observer& o, const variable_set& vars) {
        if (open()) throw usage_error("add_step_observer: an accumulation window is open; add observers between steps");
        if (std::find(observers_.begin(), observers_.end(), &o) != observers_.end()) return;
        if constexpr (float_sums && !ShardingAccumulation<Accum> && !ReducingAccumulation<Accum, Exec>) {
            if (o.observes_micro_batches() && floats_.empty()) {
                std::vector<typename Exec::vector> floats(vars.size());
                for (std::size_t i = 0; i < vars.size(); ++i) {
                    if (vars[i].ref.trainable()) Exec::reserve(floats[i], vars[i].ref.size());
                }
                floats_ = std::move(floats);
            }
        }
        observers_.push_back(&o);
        update_separate_sums();
    }
    /// Unregisters an observer; not while a window is open.
    void remove_observer(step_observer& o) {
        if (open()) throw usage_error("remove_step_observer: an accumulation window is open; remove observers between steps");
        std::erase(observers_, &o);
        update_separate_sums();
    }
    /// The registered observers, in order.
    [[nodiscard]] std::span<step_observer* const> observers() const { return observers_; }

private:
    /// Whether micro-batches are summed apart for an observer: only where a window can hold more
    /// than one (a window of one micro-batch is observed whole, in finish()).
    [[nodiscard]] bool separating() const {
        return separate_sums_ && (target_samples() != 0 || target_micro_batches() > 1);
    }

    void update_separate_sums() {
        separate_sums_ = false;
        if constexpr (!ShardingAccumulation<Accum> && !ReducingAccumulation<Accum, Exec>) {
            for (const step_observer* o : observers_) separate_sums_ = separate_sums_ || o->observes_micro_batches();
        }
    }

    void add_to_floats(const variable_set& vars, bool first) {
        for (std::size_t i = 0; i < vars.size(); ++i) {
            const variable_ref& v = vars[i].ref;
            if (!v.trainable()) continue;
            Exec::for_each(v.size(), detail::accumulate_sum<float>{v.grad, Exec::data(floats_[i]), first});
        }
    }

    void add_to_accumulators(const variable_set& vars, bool first) {
        for (std::size_t i = 0; i < vars.size(); ++i) {
            const variable_ref& v = vars[i].ref;
            if (!v.trainable()) continue;
            if constexpr (std::is_same_v<accumulator_type, double>) {
                Exec::for_each(v.size(), detail::accumulate_sum<double>{v.grad, Exec::data(doubles_[i]), first});
            } else {
                Exec::for_each(v.size(), detail::accumulate_kahan{v.grad, Exec::data(kahan_[i].first),
                                                                  Exec::data(kahan_[i].second), first});
            }
        }
    }

    [[no_unique_address]] Accum policy_{};
    accumulation_window size_{};
    std::size_t samples_ = 0;  // rows of the window, on every process
    std::size_t local_ = 0;    // of which this process trained
    std::size_t batches_ = 0;
    bool has_grads_ = false;
    bool in_gemm_ = false;
    bool separate_sums_ = false;  // an observer wants each micro-batch's gradients
    std::vector<typename Exec::vector> floats_;
    std::vector<step_observer*> observers_;
    std::vector<gradient_buffer> statistics_;
    std::vector<double_storage_t<Exec>> doubles_;
    std::vector<std::pair<typename Exec::vector, typename Exec::vector>> kahan_;
};

}  // namespace batchwise
