// Reshape<12> after a Dense<10>: 10 elements cannot become 12.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<4>, bw::Dense<10>, bw::Reshape<12>>;
int main() { bw::Model<Net> model; }
