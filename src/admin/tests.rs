use super::*;

#[test]
fn admin_routes_mutate_exactly_when_not_a_read() {
    for r in ROUTES {
        assert_eq!(r.mutating, r.method != "GET", "{r:?}");
    }
}

#[test]
fn admin_routes_are_listed_once_each() {
    for (i, a) in ROUTES.iter().enumerate() {
        for b in &ROUTES[i + 1..] {
            assert!(a.endpoint != b.endpoint, "{a:?} and {b:?}");
            assert!((a.method, a.path) != (b.method, b.path), "{a:?} twice");
        }
    }
}

#[test]
fn admin_route_lookup() {
    let found = |m: Method, p: &str| find_route(&m, p).map(|r| r.endpoint).ok();
    assert_eq!(found(Method::GET, "/api/v1/status"), Some(Endpoint::Status));
    assert_eq!(
        found(Method::GET, "/api/v1/reports/000006"),
        Some(Endpoint::Report)
    );
    assert_eq!(found(Method::GET, "/api/v1/reports/"), None);
    assert_eq!(found(Method::GET, "/api/v1/reports/a/b"), None);
    assert_eq!(
        found(Method::PUT, "/api/v1/weights"),
        Some(Endpoint::Weights)
    );

    assert_eq!(
        find_route(&Method::GET, "/nope").err(),
        Some(NoRoute::Unknown)
    );
    let no = find_route(&Method::GET, "/api/v1/weights").expect_err("refused");
    assert_eq!(no, NoRoute::Method(vec!["PUT"]));
    let r = no.response(&Method::GET, "/api/v1/weights");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[header::ALLOW], "PUT");
    let r = NoRoute::Unknown.response(&Method::GET, "/nope");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
