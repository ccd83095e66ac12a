import Testing
import TernHTTP

@Suite struct GRPCTests {
    @Test func localRepliesCarryEnvoysStatusForTheirHTTPStatus() {
        #expect([400, 401, 403, 404, 429, 502, 503, 504, 500, 200].map(GRPC.status(forHTTP:))
                == [13, 16, 7, 12, 14, 14, 14, 14, 2, 2])
    }

    @Test func grpcTimeoutValuesAsTheSpecWritesThem() {
        func t(_ s: String) -> UInt64? { GRPC.timeoutNanos(Array(s.utf8)) }
        #expect(t("1H") == 3_600_000_000_000 && t("2M") == 120_000_000_000 && t("3S") == 3_000_000_000)
        #expect(t("100m") == 100_000_000 && t("5u") == 5_000 && t("7n") == 7 && t("0m") == 0)
        // Eight digits of hours overflow 64 bits of nanoseconds: as long as can be.
        #expect(t("99999999H") == .max && t("99999999S") == 99_999_999_000_000_000)
        // Not timeouts: no unit, no digits, nine digits, a sign, an unknown unit, a space.
        for bad in ["", "m", "10", "123456789S", "-1S", "1s", "1 S", "1.5S"] { #expect(t(bad) == nil, "\(bad)") }
    }

    @Test func grpcContentTypes() {
        for yes in ["application/grpc", "application/grpc+proto", "application/grpc+json"] {
            #expect(GRPC.isGRPC(contentType: Array(yes.utf8)), "\(yes)")
        }
        for no in ["application/grpc-web", "application/grpc-web+proto", "application/json", "application/grp", "text/grpc", "Application/GRPC"] {
            #expect(!GRPC.isGRPC(contentType: Array(no.utf8)), "\(no)")
        }
    }
}
