// A metric chosen at run time (Model::compile, as in Keras): one virtual call per micro-batch,
// and the model's type stays independent of the metrics'.
#pragma once

#include <string_view>
#include <utility>

#include "batchwise/core/concepts.hpp"
#include "batchwise/exec/matrix_view.hpp"
#include "batchwise/losses/loss.hpp"
#include "batchwise/metrics/metrics.hpp"

namespace batchwise::detail {

template <class Exec>
struct metric_base {
    virtual ~metric_base() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    virtual double sum(const_matrix_view pred, const_matrix_view target, target_description d,
                       float* scratch) const = 0;
};

template <class M, class Exec>
struct metric_holder final : metric_base<Exec> {
    M metric;
    explicit metric_holder(M m) : metric(std::move(m)) {}
    [[nodiscard]] std::string_view name() const override { return M::name; }
    double sum(const_matrix_view pred, const_matrix_view target, target_description d,
               float* scratch) const override {
        return metric.template sum<Exec>(pred, target, d, scratch);
    }
};

}  // namespace batchwise::detail
