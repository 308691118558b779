// The Keras progress bar: "Epoch 3/10", then a bar with steps, ETA, time per step and running
// loss and metrics. Redrawn in place at most every 0.05 s on a terminal, cut to the terminal's
// width so that it never wraps; in a log file, the epoch's header and its final line; with
// one_line (fit's verbose = 2), one line per epoch.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <sys/ioctl.h>
#include <unistd.h>

#include "batchwise/train/callbacks.hpp"

namespace batchwise {

/// Keras's progress bar as a callback: fit adds one when verbose > 0 and none is passed; pass one
/// to change its options (output stream, width, redraw rate).
class ProgressBar final : public Callback {
public:
    /// ProgressBar's settings.
    struct options {
        /// Where it writes; not owned.
        std::ostream* out = &std::cout;
        /// Redraw in place; by default, when `out` is std::cout and stdout is a terminal.
        std::optional<bool> interactive{};
        /// Redraws in place no more often than this (the last batch always draws).
        double min_interval_seconds = 0.05;
        /// Characters of the bar itself.
        int width = 30;
        /// One line per epoch, printed when it ends (Keras's verbose=2).
        bool one_line = false;
        /// Longest line drawn in place; 0: the terminal's width (or $COLUMNS, else 80).
        std::size_t columns = 0;
    };
    /// To std::cout, redrawn in place when it is a terminal.
    ProgressBar() : ProgressBar(options{}) {}
    /// Decides here whether to redraw in place, and the line width.
    explicit ProgressBar(options o) : o_(o) {
        interactive_ = !o_.one_line &&
                       o_.interactive.value_or(o_.out == &std::cout && ::isatty(STDOUT_FILENO) == 1);
        columns_ = o_.columns != 0 ? o_.columns : terminal_columns();
    }
    [[nodiscard]] bool is_progress_bar() const override { return true; }

    void on_train_begin(training_context& ctx) override { epochs_ = ctx.epochs(); }

    void on_epoch_begin(training_context&, std::uint64_t epoch, std::size_t steps) override {
        steps_ = steps;
        start_ = last_draw_ = clock::now();
        drawn_ = false;
        epoch_ = epoch;
        if (o_.one_line) return;
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
        std::ostringstream line;
        line << counter() << " " << bar(false) << " - ETA: " << duration(eta) << " - " << last_;
        // Padded to clear a longer previous line, cut so that it never wraps: a wrapped line
        // cannot be redrawn in place and smears down the terminal.
        std::string text = line.str();
        text.resize(columns_ - 1, ' ');
        *o_.out << "\r" << text;
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
        std::string line = o_.one_line ? "Epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(epochs_) +
                                             " - " + std::to_string(done_) + " steps"
                                       : counter() + " " + bar(true);
        line += " - " + duration(elapsed) + " " + step_time(per_step) + "/step";
        char buf[64];
        for (const auto& [name, v] : logs.values) {
            if (name == "learning_rate") continue;
            std::snprintf(buf, sizeof buf, " - %s: %.4f", name.c_str(), v);
            line += buf;
        }
        if (interactive_ && line.size() < columns_ - 1) line.resize(columns_ - 1, ' ');
        *o_.out << (interactive_ ? "\r" : "") << line << "\n";
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
        } else if (s >= 10) {
            std::snprintf(buf, sizeof buf, "%ds", int(s));
        } else {
            std::snprintf(buf, sizeof buf, "%.1fs", s);  // not "0s" for a 0.94 s epoch
        }
        return buf;
    }
    static std::size_t terminal_columns() {
        winsize ws{};
        if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) return ws.ws_col;
        if (const char* c = std::getenv("COLUMNS")) {
            const long n = std::strtol(c, nullptr, 10);
            if (n > 1) return static_cast<std::size_t>(n);
        }
        return 80;
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
    std::size_t columns_ = 80;
    std::uint64_t epochs_ = 0, epoch_ = 0;
    std::size_t steps_ = 0, done_ = 0;
    clock::time_point start_, last_draw_;
    bool drawn_ = false;
    logs last_;
};

}  // namespace batchwise
