// zlib as Swift sees it: tern-load compresses HdrHistogram log entries with compress2 (zlib1g-dev).
#include <zlib.h>
