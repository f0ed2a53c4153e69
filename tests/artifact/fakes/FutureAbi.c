/* An artifact of an ABI version this runtime does not read: the loader must
 * refuse it from the version alone, never touching its descriptor.
 * FAKE_ABI_VERSION: the version it claims (one past the runtime's; or 3, an
 * artifact built before inputs joined the descriptor). */
#include <stdint.h>
uint32_t optdsl_abi_version(void) { return FAKE_ABI_VERSION; }
const void *optdsl_artifact_descriptor(void) { return 0; }
