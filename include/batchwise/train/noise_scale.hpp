// The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018), estimated from
// gradient sums the step computes anyway: no extra backward pass.
//
// Micro-batch i of a window has b_i samples and gradient sum s_i; the window has B = sum b_i
// samples and the sum s = sum s_i. With the per-sample gradient's mean G and covariance Sigma,
//   E |s_i / b_i|^2 = |G|^2 + tr(Sigma) / b_i   and   E |s / B|^2 = |G|^2 + tr(Sigma) / B.
// Weighting the micro-batches by b_i / B, Y_small = sum_i |s_i|^2 / (b_i B) has expectation
// |G|^2 + n tr(Sigma) / B for n micro-batches, whatever their sizes, so
//   tr(Sigma) ~ (Y_small - Y_big) B / (n - 1)   and   |G|^2 ~ (n Y_big - Y_small) / (n - 1)
// are unbiased for unequal sizes too (for equal ones they are McCandlish's two-batch formulas).
// A step of one micro-batch pairs itself with the step before (n = 2, b_1 and b_2 the two steps'
// sizes): exact while the weights move little between two steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/core/config.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/step/window.hpp"

namespace batchwise {

/// Which estimate a step's noise scale came from.
enum class noise_scale_estimator {
    /// The window's micro-batches (two or more) against their total.
    micro_batches,
    /// A step of one micro-batch paired with the step before.
    consecutive_steps,
};

/// One step's unbiased estimates of tr(Sigma) and |G|^2 (and preconditioned by the optimizer's
/// second moments, where it has them: Adam's view of the noise).
struct noise_scale_sample {
    /// Estimate of tr(Sigma), the summed variance of a per-sample gradient.
    double trace = 0.0;
    /// Estimate of |G|^2, the squared norm of the mean gradient.
    double squared_mean = 0.0;
    /// tr(Sigma) of the gradient times the optimizer's preconditioner; NaN without second moments.
    double preconditioned_trace = std::numeric_limits<double>::quiet_NaN();
    /// |G|^2 of the same; NaN without second moments.
    double preconditioned_squared_mean = std::numeric_limits<double>::quiet_NaN();
    /// Which estimate this is.
    noise_scale_estimator estimator = noise_scale_estimator::micro_batches;
};

namespace detail {
/// The preconditioner of one parameter: Adam's 1 / (sqrt(v) + eps), RMSprop's 1 / sqrt(v + eps).
BATCHWISE_HOST_DEVICE inline float preconditioner(float v, float epsilon, bool inside) {
    return inside ? 1.0f / std::sqrt(v + epsilon) : 1.0f / (std::sqrt(v) + epsilon);
}
struct square_into {
    const float* a;  // null: b alone
    const float* b;  // null: a alone
    const float* v;  // null: no preconditioning
    float epsilon;
    bool inside;
    float* out;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        float x = a == nullptr ? b[i] : (b != nullptr ? a[i] + b[i] : a[i]);
        if (v != nullptr) x *= preconditioner(v[i], epsilon, inside);
        out[i] = x * x;
    }
};
}  // namespace detail

/// A step observer (Model::add_step_observer) that estimates the gradient noise scale at every
/// optimizer step, keeps an exponential moving average of each of the two terms (the ratio of
/// two noisy estimates is smoothed by smoothing both, as McCandlish et al.\ advise), and adds per
/// epoch to the logs: "noise_scale" (sum of the epoch's tr(Sigma) estimates over the sum of its
/// |G|^2 estimates), "noise_scale_preconditioned" (the same under Adam's or RMSprop's
/// preconditioner), and "noise_scale_micro_batch_steps" (the fraction of the epoch's steps
/// estimated from micro-batches rather than from consecutive steps).
template <ExecutionPolicy Exec>
class gradient_noise_scale final : public step_observer, public checkpoint_state {
public:
    /// gradient_noise_scale's settings.
    struct options {
        /// Decay per optimizer step of the moving averages behind value().
        double smoothing = 0.95;
    };
    gradient_noise_scale() : gradient_noise_scale(options{}) {}
    /// usage_error when smoothing is not in [0, 1).
    explicit gradient_noise_scale(options o) : o_(o) {
        if (!(o_.smoothing >= 0.0 && o_.smoothing < 1.0)) {
            throw usage_error("gradient_noise_scale: smoothing must be in [0, 1)");
        }
    }

    // ---- step_observer --------------------------------------------------------------------------

    [[nodiscard]] bool observes_micro_batches() const override { return true; }

    void observe_micro_batch(std::span<const gradient_buffer> sums, std::size_t samples,
                             const second_moment_view& moments) override {
        const double b = static_cast<double>(samples);
        prepare(sums);
        const norm_sums n = norms(sums, false, moments, false);
        small_ += n.plain / b;
        small_pre_ += n.preconditioned / b;
        micro_samples_ += samples;
        ++micro_batches_;
    }

    void observe(step_gradients& g) override {
        restore_pending(g.gradients);
        const double big = static_cast<double>(g.samples);
        const bool preconditioned = !g.second_moments.values.empty();
        noise_scale_sample x;
        if (micro_batches_ >= 2 && micro_samples_ == g.samples) {
            prepare(g.gradients);
            const norm_sums n = norms(g.gradients, false, g.second_moments, false);
            x = estimate(small_, n.plain, big, micro_batches_);
            if (preconditioned) {
                const noise_scale_sample p = estimate(small_pre_, n.preconditioned, big, micro_batches_);
                x.preconditioned_trace = p.trace;
                x.preconditioned_squared_mean = p.squared_mean;
            }
            x.estimator = noise_scale_estimator::micro_batches;
            previous_samples_ = 0;
            record(x);
        } else {
            // One micro-batch: this step and the one before are the two "small" batches. One
            // pass takes both norms and keeps this step's gradient for the next.
            prepare(g.gradients);
            const bool paired = previous_samples_ > 0;
            const norm_sums n = norms(g.gradients, paired, g.second_moments, true);
            if (paired) {
                const double total = big + static_cast<double>(previous_samples_);
                const double before = static_cast<double>(previous_samples_);
                x = estimate(n.plain / big + previous_norm_ / before, n.paired, total, 2);
                if (preconditioned) {
                    // Both steps under this step's preconditioner, so that the terms compare.
                    const noise_scale_sample p = estimate(n.preconditioned / big + n.previous_preconditioned / before,
                                                          n.paired_preconditioned, total, 2);
                    x.preconditioned_trace = p.trace;
                    x.preconditioned_squared_mean = p.squared_mean;
                }
                x.estimator = noise_scale_estimator::consecutive_steps;
                record(x);
            }
            previous_samples_ = g.samples;
            previous_norm_ = n.plain;
        }
        small_ = 0.0;
        small_pre_ = 0.0;
        micro_samples_ = 0;
        micro_batches_ = 0;
    }

    /// A window was abandoned (a non-finite loss, loss_and_gradients): its micro-batches do not
    /// count.
    void discarded() override {
        small_ = 0.0;
        small_pre_ = 0.0;
        micro_samples_ = 0;
        micro_batches_ = 0;
    }

    void add_epoch_values(epoch_logs& logs) override {
        logs.set("noise_scale", ratio(epoch_.trace, epoch_.squared_mean));
        logs.set("noise_scale_preconditioned", ratio(epoch_.preconditioned_trace, epoch_.preconditioned_squared_mean));
        logs.set("noise_scale_micro_batch_steps",
                 epoch_steps_ == 0 ? std::numeric_limits<double>::quiet_NaN()
                                   : static_cast<double>(epoch_micro_steps_) / static_cast<double>(epoch_steps_));
        epoch_ = {0.0, 0.0, 0.0, 0.0};
        epoch_steps_ = 0;
        epoch_micro_steps_ = 0;
    }

    // ---- results --------------------------------------------------------------------------------

    /// The smoothed noise scale: the moving average of tr(Sigma) over that of |G|^2 (NaN before
    /// the first estimate, or while the average |G|^2 is not positive).
    [[nodiscard]] double value() const { return ratio(ema_.trace, ema_.squared_mean); }
    /// value() under the optimizer's preconditioner; NaN for an optimizer without second moments.
    [[nodiscard]] double preconditioned_value() const {
        return ratio(ema_.preconditioned_trace, ema_.preconditioned_squared_mean);
    }
    /// The last step's estimate.
    [[nodiscard]] const noise_scale_sample& last() const { return last_; }
    /// How many steps have been estimated (a checkpoint carries the count).
    [[nodiscard]] std::uint64_t estimates() const { return estimates_; }
    /// The sums over every estimate since construction (carried by a checkpoint): their ratio is
    /// the least noisy estimate of a noise scale that does not change.
    [[nodiscard]] double mean_value() const { return ratio(total_.trace, total_.squared_mean); }
    /// mean_value() under the optimizer's preconditioner.
    [[nodiscard]] double mean_preconditioned_value() const {
        return ratio(total_.preconditioned_trace, total_.preconditioned_squared_mean);
    }

    // ---- checkpoint_state: what a resumed run needs to estimate what an unbroken one would ------

    [[nodiscard]] std::string checkpoint_name() const override { return "gradient_noise_scale"; }
    [[nodiscard]] std::vector<double> save_state() const override {
        std::vector<double> s{ema_.trace, ema_.squared_mean, ema_.preconditioned_trace, ema_.preconditioned_squared_mean,
                              static_cast<double>(estimates_)};
        for (const terms* t : {&epoch_, &total_}) {
            s.insert(s.end(), {t->trace, t->squared_mean, t->preconditioned_trace, t->preconditioned_squared_mean});
        }
        s.insert(s.end(), {static_cast<double>(epoch_steps_), static_cast<double>(epoch_micro_steps_), previous_norm_,
                           static_cast<double>(previous_samples_)});
        if (!pending_.empty()) {
            s.insert(s.end(), pending_.begin(), pending_.end());
        } else {
            for (const auto& p : previous_host()) s.insert(s.end(), p.begin(), p.end());
        }
        return s;
    }
    void check_state(const std::vector<double>& s) const override {
        if (s.size() < header_size) {
            throw io_error("gradient_noise_scale: the saved state has " + std::to_string(s.size()) +
                           " values, fewer than " + std::to_string(header_size));
        }
        for (const std::size_t count : {std::size_t{4}, std::size_t{13}, std::size_t{14}, std::size_t{16}}) {
            if (!(s[count] >= 0.0 && s[count] <= 9007199254740992.0) || s[count] != std::floor(s[count])) {
                throw io_error("gradient_noise_scale: saved count " + std::to_string(s[count]) + " is not a count");
            }
        }
        if ((s[16] > 0.0) != (s.size() > header_size)) {
            throw io_error("gradient_noise_scale: the saved previous step and its gradient do not agree");
        }
    }
    void restore_state(const std::vector<double>& s) override {
        ema_ = {s[0], s[1], s[2], s[3]};
        estimates_ = static_cast<std::uint64_t>(s[4]);
        epoch_ = {s[5], s[6], s[7], s[8]};
        total_ = {s[9], s[10], s[11], s[12]};
        epoch_steps_ = static_cast<std::size_t>(s[13]);
        epoch_micro_steps_ = static_cast<std::size_t>(s[14]);
        previous_norm_ = s[15];
        previous_samples_ = static_cast<std::size_t>(s[16]);
        // The previous gradient goes into the policy's memory at the next step, when the
        // variables' sizes are known.
        pending_.assign(s.begin() + header_size, s.end());
        small_ = small_pre_ = 0.0;
        micro_samples_ = micro_batches_ = 0;
    }

private:
    void restore_pending(std::span<const gradient_buffer> gradients) {
        if (pending_.empty()) return;
        const std::size_t restored = previous_samples_;
        prepare(gradients);
        previous_samples_ = restored;
        std::size_t total = 0;
        for (const std::size_t n : previous_sizes_) total += n;
        if (total != pending_.size()) {
            const std::size_t had = pending_.size();
            pending_.clear();
            previous_samples_ = 0;
            throw io_error("gradient_noise_scale: the restored previous gradient has " + std::to_string(had) +
                           " values but the model has " + std::to_string(total) + " trainable parameters");
        }
        std::size_t at = 0;
        for (std::size_t i = 0; i < previous_.size(); ++i) {
            std::vector<float> host(pending_.begin() + static_cast<std::ptrdiff_t>(at),
                                    pending_.begin() + static_cast<std::ptrdiff_t>(at + previous_sizes_[i]));
            Exec::from_host(host.data(), host.size(), Exec::data(previous_[i]));
            at += previous_sizes_[i];
        }
        pending_.clear();
    }

    void prepare(std::span<const gradient_buffer> gradients) {
        bool same = previous_.size() == gradients.size();
        for (std::size_t i = 0; same && i < gradients.size(); ++i) same = previous_sizes_[i] == gradients[i].size;
        if (same) return;
        previous_samples_ = 0;  // another model's variables: nothing to pair with
        previous_.assign(gradients.size(), typename Exec::vector{});
        previous_sizes_.assign(gradients.size(), 0);
        std::size_t largest = 0;
        for (std::size_t i = 0; i < gradients.size(); ++i) {
            Exec::reserve(previous_[i], gradients[i].size);
            previous_sizes_[i] = gradients[i].size;
            largest = std::max(largest, gradients[i].size);
        }
        if constexpr (!HostMemoryPolicy<Exec>) Exec::reserve(scratch_, largest);
    }

    struct terms {
        double trace = 0.0;
        double squared_mean = 0.0;
        double preconditioned_trace = 0.0;
        double preconditioned_squared_mean = 0.0;
    };

    static double ratio(double trace, double squared_mean) {
        return squared_mean > 0.0 && std::isfinite(trace) ? trace / squared_mean
                                                          : std::numeric_limits<double>::quiet_NaN();
    }

    /// Y_small (the b_i / B weighted micro-batch norms), |s|^2 and B, n micro-batches.
    static noise_scale_sample estimate(double small, double total_norm, double big, std::size_t n) {
        const double y_small = small / big;
        const double y_big = total_norm / (big * big);
        const double k = static_cast<double>(n);
        return {(y_small - y_big) * big / (k - 1.0), (k * y_big - y_small) / (k - 1.0)};
    }

    void record(const noise_scale_sample& x) {
        last_ = x;
        const double a = estimates_ == 0 ? 0.0 : o_.smoothing;
        const bool pre = !std::isnan(x.preconditioned_trace);
        ema_.trace = a * ema_.trace + (1.0 - a) * x.trace;
        ema_.squared_mean = a * ema_.squared_mean + (1.0 - a) * x.squared_mean;
        if (pre) {
            const double ap = std::isnan(ema_.preconditioned_trace) || estimates_ == 0 ? 0.0 : a;
            ema_.preconditioned_trace = ap * (std::isnan(ema_.preconditioned_trace) ? 0.0 : ema_.preconditioned_trace) +
                                        (1.0 - ap) * x.preconditioned_trace;
            ema_.preconditioned_squared_mean =
                ap * (std::isnan(ema_.preconditioned_squared_mean) ? 0.0 : ema_.preconditioned_squared_mean) +
                (1.0 - ap) * x.preconditioned_squared_mean;
        }
        for (terms* t : {&epoch_, &total_}) {
            t->trace += x.trace;
            t->squared_mean += x.squared_mean;
            if (pre) {
                t->preconditioned_trace += x.preconditioned_trace;
                t->preconditioned_squared_mean += x.preconditioned_squared_mean;
            }
        }
        ++estimates_;
        ++epoch_steps_;
        if (x.estimator == noise_scale_estimator::micro_batches) ++epoch_micro_steps_;
    }

    [[nodiscard]] std::vector<std::vector<float>> previous_host() const {
        std::vector<std::vector<float>> out;
        if (previous_samples_ == 0) return out;
        for (std::size_t i = 0; i < previous_.size(); ++i) {
            out.emplace_back(previous_sizes_[i]);
            Exec::to_host(Exec::data(previous_[i]), previous_sizes_[i], out.back().data());
        }
        return out;
    }

    /// Squared norms of the gradients `a`, of a + previous (`paired`), and of both with each
    /// element times its preconditioner (when `m` has second moments); with `keep`, a
    /// is copied into previous in the same pass. Summed in double.
    struct norm_sums {
        double plain = 0.0, paired = 0.0, preconditioned = 0.0, paired_preconditioned = 0.0;
        double previous_preconditioned = 0.0;  // the previous step's, under this preconditioner
    };
    norm_sums norms(std::span<const gradient_buffer> a, bool paired, const second_moment_view& m, bool keep) {
        norm_sums out;
        const bool pre = !m.values.empty();
        for (std::size_t i = 0; i < a.size(); ++i) {
            float* prev = keep || paired ? Exec::data(previous_[i]) : nullptr;
            const float* v = pre ? m.values[i].data : nullptr;
            if constexpr (HostMemoryPolicy<Exec>) {
                const host_pass h{a[i].data, prev, v, m.epsilon, m.epsilon_inside_root, a[i].size, keep};
                if (paired) {
                    pre ? h.template run<true, true>(out) : h.template run<true, false>(out);
                } else {
                    pre ? h.template run<false, true>(out) : h.template run<false, false>(out);
                }
            } else {
                const std::size_t n = a[i].size;
                float* scratch = Exec::data(scratch_);
                auto sum_of = [&](const float* x, const float* y, const float* vi) {
                    Exec::for_each(n, detail::square_into{x, y, vi, m.epsilon, m.epsilon_inside_root, scratch});
                    return Exec::sum(scratch, n);
                };
                out.plain += sum_of(a[i].data, nullptr, nullptr);
                if (pre) out.preconditioned += sum_of(a[i].data, nullptr, v);
                if (paired) {
                    out.paired += sum_of(a[i].data, prev, nullptr);
                    if (pre) {
                        out.paired_preconditioned += sum_of(a[i].data, prev, v);
                        out.previous_preconditioned += sum_of(nullptr, prev, v);
                    }
                }
                if (keep) Exec::copy(a[i].data, n, prev);
            }
        }
        return out;
    }

    /// The host loop of norms(): float partial sums in independent lanes over short blocks (so
    /// that the compiler vectorises them), added up in double per block.
    struct host_pass {
        const float* a;
        float* prev;
        const float* v;
        float epsilon;
        bool inside;
        std::size_t n;
        bool keep;

        template <bool Paired, bool Pre>
        void run(norm_sums& out) const {
            constexpr std::size_t lanes = 16, block = 256;
            for (std::size_t start = 0; start < n; start += block) {
                const std::size_t end = std::min(n, start + block);
                float plain[lanes] = {}, paired[lanes] = {}, pre[lanes] = {}, paired_pre[lanes] = {}, prev_pre[lanes] = {};
                auto one = [&](std::size_t j, std::size_t lane) {
                    const float x = a[j];
                    plain[lane] += x * x;
                    if constexpr (Paired) {
                        const float y = x + prev[j];
                        paired[lane] += y * y;
                        if constexpr (Pre) {
                            const float p = detail::preconditioner(v[j], epsilon, inside);
                            pre[lane] += (x * p) * (x * p);
                            paired_pre[lane] += (y * p) * (y * p);
                            prev_pre[lane] += (prev[j] * p) * (prev[j] * p);
                        }
                    } else if constexpr (Pre) {
                        const float p = detail::preconditioner(v[j], epsilon, inside);
                        pre[lane] += (x * p) * (x * p);
                    }
                };
                std::size_t i = start;
                for (; i + lanes <= end; i += lanes) {
                    for (std::size_t l = 0; l < lanes; ++l) one(i + l, l);
                }
                for (std::size_t l = 0; i < end; ++i, ++l) one(i, l);
                for (std::size_t l = 0; l < lanes; ++l) {
                    out.plain += plain[l];
                    out.paired += paired[l];
                    out.preconditioned += pre[l];
                    out.paired_preconditioned += paired_pre[l];
                    out.previous_preconditioned += prev_pre[l];
                }
                if (keep) std::copy(a + start, a + end, prev + start);
            }
        }
    };

    static constexpr std::size_t header_size = 17;
    options o_;
    double small_ = 0.0, small_pre_ = 0.0;
    std::size_t micro_samples_ = 0, micro_batches_ = 0;
    std::vector<typename Exec::vector> previous_;
    std::vector<std::size_t> previous_sizes_;
    std::vector<double> pending_;  // a restored previous gradient, not yet in the policy's memory
    std::size_t previous_samples_ = 0;
    double previous_norm_ = 0.0;
    typename Exec::vector scratch_;
    terms ema_{0.0, 0.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
    terms epoch_, total_;
    noise_scale_sample last_;
    std::uint64_t estimates_ = 0;
    std::size_t epoch_steps_ = 0, epoch_micro_steps_ = 0;
};

}  // namespace batchwise
