// A stand-in libnghttp2.so.14 with none of nghttp2's functions, for test_nghttp2's refusal (and the integration
// test of an HTTP/2 connection when nghttp2 cannot be loaded): a library that loads but is not nghttp2.
int tern_fake_nghttp2;
