// `int` is not a layer.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<4>, bw::Dense<10>, bw::ReLU, int>;
int main() { bw::Model<Net> model; }
