// Six channels do not split into four equal groups.
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;
using Net = bw::Sequential<bw::Input<4, 4, 6>, bw::GroupNormalization<4>>;
int main() { return Net::well_formed ? 0 : 1; }
