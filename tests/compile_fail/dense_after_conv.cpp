// A Dense takes vectors: after a Conv2D's (height, width, channels) output it needs a Flatten.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<8, 8, 1>, bw::Conv2D<4, 3, 3>, bw::Dense<10>>;
int main() { return Net::well_formed ? 0 : 1; }
