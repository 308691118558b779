// A loss chosen at run time (Model::compile, as in Keras): one virtual call per micro-batch,
// and the model's type stays independent of the loss's.
#pragma once

#include <string_view>
#include <utility>

#include "batchwise/core/concepts.hpp"
#include "batchwise/exec/matrix_view.hpp"
#include "batchwise/losses/loss.hpp"

namespace batchwise::detail {

template <class Exec>
struct loss_base {
    virtual ~loss_base() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    [[nodiscard]] virtual target_description describe() const = 0;
    virtual double sum(const_matrix_view pred, const_matrix_view target, float* grad,
                       float grad_scale, float* row_loss) const = 0;
};

template <class L, class Exec>
struct loss_holder final : loss_base<Exec> {
    L loss;
    explicit loss_holder(L l) : loss(std::move(l)) {}
    [[nodiscard]] std::string_view name() const override { return L::name; }
    [[nodiscard]] target_description describe() const override { return loss.describe(); }
    double sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
               float* row_loss) const override {
        return loss.template sum<Exec>(pred, target, grad, grad_scale, row_loss);
    }
};

}  // namespace batchwise::detail
