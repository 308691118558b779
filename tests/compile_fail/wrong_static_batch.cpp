// A batch whose size is fixed at compile time to 64, given to a static_batch<128> model.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<4>, bw::Dense<2>>;
int main() {
    bw::Model<Net, bw::static_batch<128>> model;
    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    xt::xtensor_fixed<float, xt::xshape<64, 4>> x{};
    xt::xtensor_fixed<float, xt::xshape<64, 2>> y{};
    model.train_on_batch(x, y);
}
