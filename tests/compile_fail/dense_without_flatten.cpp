// A Dense fed a 28x28 image without a Flatten: must stop at compile time naming position 2.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<28, 28>, bw::ReLU, bw::Dense<256>, bw::Dense<10>>;
int main() { bw::Model<Net> model; }
