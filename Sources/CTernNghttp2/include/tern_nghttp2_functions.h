// Every nghttp2 function Tern calls, as X(return type, name, (parameters), (arguments)): the shim resolves them
// from libnghttp2.so.14 when the first HTTP/2 session is made (tern_nghttp2_load) and defines tern_NAME wrappers
// over them, so a process that never sees HTTP/2 never loads nghttp2 (linked, it cost an idle sidecar 0.1 to 0.2
// MiB of resident memory: Benchmarks/README.md, "HTTP/2 from clients"). Swift calls the tern_ names; the types,
// enums and NGHTTP2_ constants still come from nghttp2.h.
#define TERN_NGHTTP2_FUNCTIONS(X) \
    X(int, nghttp2_session_callbacks_new, (nghttp2_session_callbacks **callbacks_ptr), (callbacks_ptr)) \
    X(void, nghttp2_session_callbacks_del, (nghttp2_session_callbacks *callbacks), (callbacks)) \
    X(void, nghttp2_session_callbacks_set_on_begin_headers_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_begin_headers_callback callback), (cbs, callback)) \
    X(void, nghttp2_session_callbacks_set_on_header_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_header_callback callback), (cbs, callback)) \
    X(void, nghttp2_session_callbacks_set_on_frame_recv_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_frame_recv_callback callback), (cbs, callback)) \
    X(void, nghttp2_session_callbacks_set_on_data_chunk_recv_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_data_chunk_recv_callback callback), (cbs, callback)) \
    X(void, nghttp2_session_callbacks_set_on_begin_frame_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_begin_frame_callback callback), (cbs, callback)) \
    X(void, nghttp2_session_callbacks_set_on_frame_send_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_frame_send_callback callback), (cbs, callback)) \
    X(int, nghttp2_session_terminate_session, (nghttp2_session *session, uint32_t error_code), (session, error_code)) \
    X(void, nghttp2_session_callbacks_set_on_stream_close_callback, (nghttp2_session_callbacks *cbs, nghttp2_on_stream_close_callback callback), (cbs, callback)) \
    X(int, nghttp2_option_new, (nghttp2_option **option_ptr), (option_ptr)) \
    X(void, nghttp2_option_del, (nghttp2_option *option), (option)) \
    X(void, nghttp2_option_set_no_auto_window_update, (nghttp2_option *option, int val), (option, val)) \
    X(void, nghttp2_option_set_peer_max_concurrent_streams, (nghttp2_option *option, uint32_t val), (option, val)) \
    X(void, nghttp2_option_set_max_send_header_block_length, (nghttp2_option *option, size_t val), (option, val)) \
    X(void, nghttp2_option_set_max_settings, (nghttp2_option *option, size_t val), (option, val)) \
    X(void, nghttp2_option_set_max_outbound_ack, (nghttp2_option *option, size_t val), (option, val)) \
    X(int, nghttp2_session_server_new3, (nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks, void *user_data, const nghttp2_option *option, nghttp2_mem *mem), (session_ptr, callbacks, user_data, option, mem)) \
    X(int, nghttp2_session_client_new3, (nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks, void *user_data, const nghttp2_option *option, nghttp2_mem *mem), (session_ptr, callbacks, user_data, option, mem)) \
    X(void, nghttp2_session_del, (nghttp2_session *session), (session)) \
    X(ssize_t, nghttp2_session_mem_recv, (nghttp2_session *session, const uint8_t *in, size_t inlen), (session, in, inlen)) \
    X(ssize_t, nghttp2_session_mem_send, (nghttp2_session *session, const uint8_t **data_ptr), (session, data_ptr)) \
    X(int, nghttp2_session_want_read, (nghttp2_session *session), (session)) \
    X(int, nghttp2_session_want_write, (nghttp2_session *session), (session)) \
    X(int, nghttp2_session_resume_data, (nghttp2_session *session, int32_t stream_id), (session, stream_id)) \
    X(int, nghttp2_session_consume, (nghttp2_session *session, int32_t stream_id, size_t size), (session, stream_id, size)) \
    X(int, nghttp2_session_consume_connection, (nghttp2_session *session, size_t size), (session, size)) \
    X(int, nghttp2_session_consume_stream, (nghttp2_session *session, int32_t stream_id, size_t size), (session, stream_id, size)) \
    X(int, nghttp2_session_set_local_window_size, (nghttp2_session *session, uint8_t flags, int32_t stream_id, int32_t window_size), (session, flags, stream_id, window_size)) \
    X(int32_t, nghttp2_session_get_last_proc_stream_id, (nghttp2_session *session), (session)) \
    X(uint32_t, nghttp2_session_get_remote_settings, (nghttp2_session *session, nghttp2_settings_id id), (session, id)) \
    X(int, nghttp2_session_check_request_allowed, (nghttp2_session *session), (session)) \
    X(int32_t, nghttp2_session_get_remote_window_size, (nghttp2_session *session), (session)) \
    X(int32_t, nghttp2_session_get_stream_remote_window_size, (nghttp2_session *session, int32_t stream_id), (session, stream_id)) \
    X(int, nghttp2_submit_settings, (nghttp2_session *session, uint8_t flags, const nghttp2_settings_entry *iv, size_t niv), (session, flags, iv, niv)) \
    X(int32_t, nghttp2_submit_request, (nghttp2_session *session, const nghttp2_priority_spec *pri_spec, const nghttp2_nv *nva, size_t nvlen, const nghttp2_data_provider *data_prd, void *stream_user_data), (session, pri_spec, nva, nvlen, data_prd, stream_user_data)) \
    X(int, nghttp2_submit_response, (nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen, const nghttp2_data_provider *data_prd), (session, stream_id, nva, nvlen, data_prd)) \
    X(int32_t, nghttp2_submit_headers, (nghttp2_session *session, uint8_t flags, int32_t stream_id, const nghttp2_priority_spec *pri_spec, const nghttp2_nv *nva, size_t nvlen, void *stream_user_data), (session, flags, stream_id, pri_spec, nva, nvlen, stream_user_data)) \
    X(int, nghttp2_submit_trailer, (nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen), (session, stream_id, nva, nvlen)) \
    X(int, nghttp2_submit_rst_stream, (nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code), (session, flags, stream_id, error_code)) \
    X(int, nghttp2_submit_shutdown_notice, (nghttp2_session *session), (session)) \
    X(int, nghttp2_submit_ping, (nghttp2_session *session, uint8_t flags, const uint8_t *opaque_data), (session, flags, opaque_data)) \
    X(int, nghttp2_submit_goaway, (nghttp2_session *session, uint8_t flags, int32_t last_stream_id, uint32_t error_code, const uint8_t *opaque_data, size_t opaque_data_len), (session, flags, last_stream_id, error_code, opaque_data, opaque_data_len)) \
    X(const char *, nghttp2_strerror, (int lib_error_code), (lib_error_code))
