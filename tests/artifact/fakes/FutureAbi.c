/* An artifact of an ABI version this runtime does not read: the loader must
 * refuse it from the version alone, never touching its descriptor. */
#include <stdint.h>
uint32_t optdsl_abi_version(void) { return 4; }
const void *optdsl_artifact_descriptor(void) { return 0; }
