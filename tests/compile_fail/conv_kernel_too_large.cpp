// A 3 x 3 kernel without padding cannot slide over a 2 x 2 image.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<2, 2, 1>, bw::Conv2D<4, 3, 3>>;
int main() { return Net::well_formed ? 0 : 1; }
