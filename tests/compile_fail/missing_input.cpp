// A Sequential must start with Input<dims...>.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Dense<10>, bw::ReLU>;
int main() { bw::Model<Net> model; }
