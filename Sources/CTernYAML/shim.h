// libyaml as Swift sees it (Debian's libyaml-dev): TernConfig reads configuration through its event parser,
// keeping each event's mark for line numbers. No C code: the API imports as is.
#include <yaml.h>
