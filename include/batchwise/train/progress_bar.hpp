// The Keras progress bar: "Epoch 3/10", then a bar with steps, ETA, time per step and running
// loss and metrics. Redrawn in place at most every 0.05 s on a terminal; in a log file, one line
// per epoch.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <unistd.h>

#include "batchwise/train/callbacks.hpp"

namespace batchwise {

class ProgressBar final : public Callback {
public:
    struct options {
        std::ostream* out = &std::cout;
        /// Redraw in place; by default, when `out` is std::cout and stdout is a terminal.
        std::optional<bool> interactive{};
        double min_interval_seconds = 0.05;
        int width = 30;
    };
    ProgressBar() : ProgressBar(options{}) {}
    explicit ProgressBar(options o) : o_(o) {
        interactive_ = o_.interactive.value_or(o_.out == &std::cout && ::isatty(STDOUT_FILENO) == 1);
    }
    [[nodiscard]] bool is_progress_bar() const override { return true; }

    void on_train_begin(training_context& ctx) override { epochs_ = ctx.epochs(); }

    void on_epoch_begin(training_context&, std::uint64_t epoch, std::size_t steps) override {
        steps_ = steps;
        start_ = last_draw_ = clock::now();
        drawn_ = false;
        *o_.out << "Epoch " << epoch + 1 << "/" << epochs_ << "\n";
        o_.out->flush();
    }

    void on_batch_end(training_context&, std::uint64_t step, const logs&, const logs& running) override {
        done_ = static_cast<std::size_t>(step) + 1;
        last_ = running;
        if (!interactive_) return;
        const auto now = clock::now();
        if (drawn_ && seconds(now - last_draw_) < o_.min_interval_seconds && done_ < steps_) return;
        last_draw_ = now;
        drawn_ = true;
        const double elapsed = seconds(now - start_);
        const double eta = done_ > 0 && steps_ > done_
                               ? elapsed / static_cast<double>(done_) * static_cast<double>(steps_ - done_)
                               : 0.0;
        *o_.out << "\r" << counter() << " " << bar(false) << " - ETA: " << duration(eta) << " - "
                << last_ << "   ";
        o_.out->flush();
    }

    void on_micro_batch_split(training_context&, const micro_batch_split& split) override {
        *o_.out << (interactive_ && drawn_ ? "\n" : "") << "out of memory at optimizer step "
                << split.optimizer_step << ": micro-batch " << split.from << " -> " << split.to
                << ", the step continues (" << split.reason << ")\n";
        o_.out->flush();
        drawn_ = false;
    }

    void on_step_capture_refused(training_context&, const step_capture_refusal& r) override {
        *o_.out << (interactive_ && drawn_ ? "\n" : "") << "the training step cannot be captured ("
                << r.reason << "); training it eagerly\n";
        o_.out->flush();
        drawn_ = false;
    }

    void on_epoch_end(training_context&, std::uint64_t, const epoch_logs& logs) override {
        const double elapsed = seconds(clock::now() - start_);
        const double per_step = done_ > 0 ? elapsed / static_cast<double>(done_) : 0.0;
        std::string line = counter() + " " + bar(true) + " - " + duration(elapsed) + " " +
                           step_time(per_step) + "/step";
        char buf[64];
        for (const auto& [name, v] : logs.values) {
            if (name == "learning_rate") continue;
            std::snprintf(buf, sizeof buf, " - %s: %.4f", name.c_str(), v);
            line += buf;
        }
        *o_.out << (interactive_ ? "\r" : "") << line << (interactive_ ? "   \n" : "\n");
        o_.out->flush();
    }

private:
    using clock = std::chrono::steady_clock;
    static double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

    [[nodiscard]] std::string counter() const {
        const std::string total = std::to_string(steps_);
        std::string done = std::to_string(done_);
        return std::string(total.size() > done.size() ? total.size() - done.size() : 0, ' ') + done +
               "/" + total;
    }
    [[nodiscard]] std::string bar(bool finished) const {
        const int w = o_.width;
        const int filled = finished || steps_ == 0
                               ? w
                               : static_cast<int>(static_cast<double>(w) * static_cast<double>(done_) /
                                                  static_cast<double>(steps_));
        std::string b = "[";
        for (int i = 0; i < w; ++i) b += i < filled - 1 || (i == filled - 1 && finished) ? '=' : (i == filled - 1 ? '>' : '.');
        return b + "]";
    }
    static std::string duration(double s) {
        char buf[32];
        if (s >= 3600) {
            std::snprintf(buf, sizeof buf, "%d:%02d:%02d", int(s) / 3600, int(s) / 60 % 60, int(s) % 60);
        } else if (s >= 60) {
            std::snprintf(buf, sizeof buf, "%d:%02d", int(s) / 60, int(s) % 60);
        } else {
            std::snprintf(buf, sizeof buf, "%ds", int(s));
        }
        return buf;
    }
    static std::string step_time(double s) {
        char buf[32];
        if (s >= 1.0) {
            std::snprintf(buf, sizeof buf, "%.0fs", s);
        } else if (s >= 1e-3) {
            std::snprintf(buf, sizeof buf, "%.0fms", s * 1e3);
        } else {
            std::snprintf(buf, sizeof buf, "%.0fus", s * 1e6);
        }
        return buf;
    }

    options o_;
    bool interactive_ = false;
    std::uint64_t epochs_ = 0;
    std::size_t steps_ = 0, done_ = 0;
    clock::time_point start_, last_draw_;
    bool drawn_ = false;
    logs last_;
};

}  // namespace batchwise
