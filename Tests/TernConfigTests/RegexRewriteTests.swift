import TernConfig
import TernTestSupport
import Testing

/// `rewrite.uriRegexRewrite` as Envoy applies it (RE2's GlobalReplace on the path, the query kept): checked
/// against outputs RE2 gives, including where PCRE2's own global substitution (Perl's rules) would differ.
@Suite struct RegexRewriteTests {
    func rewrite(_ match: String, _ substitution: String, _ target: String) throws -> String {
        let r = try RegexRewrite.compile(match: match, rewrite: substitution).get()
        return r.rewrite(target)
    }

    @Test func groupsAreInsertedInAnyOrder() throws {
        // Istio's documented example. Its docs say "/customprefix/v1/api/update", but \2 is "/v1/api" with its
        // slash: RE2, and so Envoy, give a double slash.
        #expect(try rewrite("^/service/([^/]+)(/.*)$", "/customprefix/\\2/\\1", "/service/update/v1/api")
                == "/customprefix//v1/api/update")
        #expect(try rewrite("^/service/([^/]+)/(.*)$", "/customprefix/\\2/\\1", "/service/update/v1/api")
                == "/customprefix/v1/api/update")
        #expect(try rewrite("/(a+)(b+)(c+)", "/\\3\\2\\1\\0", "/x/aabbbc/y") == "/x/cbbbaa/aabbbc/y")
        #expect(try rewrite("/users/([0-9]+)/orders/([0-9]+)", "/o/\\2?u=\\1", "/users/7/orders/42") == "/o/42?u=7")
    }

    @Test func everyMatchIsReplacedLeftmostFirst() throws {
        #expect(try rewrite("a", "b", "/a/a/xa") == "/b/b/xb")
        #expect(try rewrite("/v1/", "/v2/", "/v1/v1/v1/x") == "/v2/v1/v2/x")  // non-overlapping, left to right
        #expect(try rewrite("[0-9]+", "<\\0>", "/a12/b3") == "/a<12>/b<3>")
        #expect(try rewrite("(?i)/xxx/", "/yyy/", "/aaa/XxX/bbb") == "/aaa/yyy/bbb")  // Istio's second example
    }

    @Test func noMatchLeavesThePathAsItIs() throws {
        #expect(try rewrite("^/api/(.*)", "/\\1", "/web/api/x?q=1") == "/web/api/x?q=1")
        let r = try RegexRewrite.compile(match: "zzz", rewrite: "y").get()
        let path = Array("/abc".utf8)
        var pieces = 0
        #expect(r.apply(path: path.span, reactor: 0) { _ in pieces += 1 } == 0)
        #expect(pieces == 1)
    }

    @Test func theQueryAndFragmentAreKeptAndNotSearched() throws {
        #expect(try rewrite("x", "y", "/x/x?x=x") == "/y/y?x=x")
        #expect(try rewrite("^/old(/.*)?$", "/new\\1", "/old/a?b=/old/c") == "/new/a?b=/old/c")
        #expect(try rewrite("x", "y", "/x#x") == "/y#x")
        #expect(try rewrite(".*", "/fixed", "/anything?keep=1") == "/fixed?keep=1")
    }

    @Test func anchorsSeeTheWholePathNotTheSearchPosition() throws {
        #expect(try rewrite("^/a", "/b", "/a/a") == "/b/a")
        #expect(try rewrite("a$", "b", "/a/a") == "/a/b")
    }

    @Test func unsetGroupsInsertNothingAndBackslashesEscape() throws {
        #expect(try rewrite("/(x)|/(y)", "/[\\1\\2]", "/y/x") == "/[y]/[x]")
        #expect(try rewrite("b", "\\\\", "/abc") == "/a\\c")
        #expect(try rewrite("b", "\\\\1", "/abc") == "/a\\1c")  // an escaped backslash, then a plain 1
    }

    @Test func emptyMatchesFollowRE2NotPerl() throws {
        #expect(try rewrite("x*", "-", "/ab") == "-/-a-b-")
        // RE2 skips the empty match right after "b"; Perl, PCRE2's substitute and Python give "-/-a--c-".
        #expect(try rewrite("b*", "-", "/abc") == "-/-a-c-")
        // After an empty match RE2 steps over a whole UTF-8 character, never into one.
        #expect(try rewrite("x*", "-", "/é") == "-/-é-")
    }

    @Test func substitutionsEnvoyDoesNotApplyAsWrittenWarnAndBehaveAsEnvoy() throws {
        // A group the pattern lacks: RE2 rewrites nothing at all.
        #expect(try rewrite("/(a)", "/\\2", "/a/a") == "/a/a")
        #expect(RegexRewrite.problems(match: "/(a)", rewrite: "/\\2")
                == ["\\2 names a group the match does not have (it has 1 group): Envoy then rewrites nothing, every path stays as it is"])
        // An unknown escape: the substitution ends there.
        #expect(try rewrite("(a)", "b\\qc\\1", "/a") == "/b")
        #expect(RegexRewrite.problems(match: "(a)", rewrite: "b\\qc\\1")
                == ["unknown escape at offset 1 (\\0-\\9 insert groups, \\\\ a backslash): Envoy drops the rest of the substitution from there"])
        #expect(RegexRewrite.problems(match: "^/service/([^/]+)(/.*)$", rewrite: "/p/\\2/\\1") == [])
    }
}
