// Named tolerances used by the tests. Each is listed in docs/numerics.md with where it comes from;
// loosening one needs a comment saying why.
#pragma once

namespace lora::tol {

}  // namespace lora::tol
