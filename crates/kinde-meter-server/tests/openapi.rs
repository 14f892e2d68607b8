//! The OpenAPI document is generated from the code and matches Kinde's names.

mod common;

use common::TestApp;
use kinde_meter_server::routes::ROUTES;

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
    for route in ROUTES.iter().filter(|r| r.scope.is_some()) {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(op.is_object(), "{} {} missing", route.method, route.path);
        let security = op["security"].to_string();
        assert!(
            security.contains(route.scope.unwrap()),
            "{} {}: {security}",
            route.method,
            route.path
        );
    }
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
