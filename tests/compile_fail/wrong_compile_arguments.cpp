// Optimizer and loss swapped in compile().
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<4>, bw::Dense<2>>;
int main() {
    bw::Model<Net> model;
    model.compile(bw::SGD{}, bw::SGD{});
}
