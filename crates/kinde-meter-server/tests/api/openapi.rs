//! The OpenAPI document is generated from the code and matches Kinde's names.

use crate::support::TestApp;
use kinde_meter_server::routes::ROUTES;
use kinde_meter_wire::Scope;
use serde_json::json;

#[tokio::test]
async fn the_document_lists_every_api_route_with_kindes_field_names() {
    let app = TestApp::spawn().await;
    let doc: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // Every route of the table is documented, with the table's scope as its
    // security and the common error answers; nothing else is documented.
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented += 1;
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());
    for route in ROUTES.iter() {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(op.is_object(), "{} {} missing", route.method, route.path);
        let Some(scope) = route.scope else {
            assert!(op["security"].is_null(), "{} {}", route.method, route.path);
            continue;
        };
        assert_eq!(
            op["security"],
            json!([{"kindeBearerAuth": [scope.as_str()]}]),
            "{} {}",
            route.method,
            route.path
        );
        for status in ["400", "403", "429", "503"] {
            let response = &op["responses"][status];
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorResponse",
                "{} {} {status}",
                route.method,
                route.path
            );
        }
        let too_many = &op["responses"]["429"]["headers"];
        assert!(
            too_many["Retry-After"].is_object() && too_many["RateLimit-Reset"].is_object(),
            "{too_many}"
        );
        assert!(op["responses"]["503"]["headers"]["Retry-After"].is_object());
        assert_eq!(
            op["responses"]["413"].is_object(),
            op["requestBody"].is_object(),
            "413 where there is a body: {} {}",
            route.method,
            route.path
        );
    }
    // The scopes are one enum of the document too.
    let scopes: Vec<&str> = doc["components"]["schemas"]["Scope"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(scopes, all);
    let request = &doc["components"]["schemas"]["CreateMeterUsageRecordRequest"];
    let mut required: Vec<&str> = request["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(
        required,
        [
            "billing_feature_code",
            "customer_agreement_id",
            "meter_value"
        ]
    );
    for field in ["meter_usage_timestamp", "meter_type_code"] {
        assert!(request["properties"][field].is_object(), "{field}");
    }
    assert_eq!(request["properties"]["meter_value"]["type"], "string");
    let meter_type = doc["components"]["schemas"]["MeterTypeCode"].to_string();
    assert!(
        meter_type.contains("delta") && meter_type.contains("absolute"),
        "{meter_type}"
    );
    let error = &doc["components"]["schemas"]["ErrorResponse"]["properties"]["errors"];
    assert_eq!(error["type"], "array");
}
