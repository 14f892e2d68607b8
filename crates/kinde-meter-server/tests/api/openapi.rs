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
            json!([{"kindeBearerAuth": [scope.as_str()]}, {"kindeOAuth2": [scope.as_str()]}]),
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

/// The document states the rules the server enforces, so that a request valid
/// by it is refused only for what no schema can say (an unknown id, a future
/// timestamp, a reused key).
#[tokio::test]
async fn the_document_states_the_validation_rules() {
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
    let schemas = &doc["components"]["schemas"];
    let record = &schemas["CreateMeterUsageRecordRequest"]["properties"];
    assert_eq!(
        record["meter_value"]["pattern"],
        r"^[0-9]{1,18}(\.[0-9]{1,9})?$"
    );
    for code in ["customer_agreement_id", "billing_feature_code"] {
        assert_eq!(record[code]["minLength"], 1, "{code}");
        assert_eq!(record[code]["maxLength"], 255, "{code}");
        assert!(record[code]["pattern"].is_string(), "{code}");
    }
    let timestamp = record["meter_usage_timestamp"]["pattern"].as_str().unwrap();
    assert!(timestamp.contains("[Zz]") && timestamp.contains("(:?[0-5][0-9])?)?$"));
    assert_eq!(
        schemas["CreateMeterUsageRecordsBatchRequest"]["properties"]["records"]["maxItems"],
        100
    );
    let event_types = &schemas["CreateWebHookRequest"]["properties"]["event_types"];
    let codes: Vec<&str> = event_types["items"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let known: Vec<&str> = kinde_meter_core::webhook::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(codes, known);
    assert_eq!(event_types["minItems"], 1);

    // The Idempotency-Key header on both writes.
    for path in [
        "/api/v1/billing/meter_usage",
        "/api/v1/billing/meter_usage/batch",
    ] {
        let params = doc["paths"][path]["post"]["parameters"].as_array().unwrap();
        let key = params
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path}: no Idempotency-Key"));
        assert_eq!(key["in"], "header");
        assert_eq!(key["required"], false);
        assert_eq!(key["schema"]["pattern"], r"^[\x21-\x7E]{1,255}$", "{path}");
        assert_eq!(key["schema"]["maxLength"], 255, "{path}");
    }
    let page_size = doc["paths"]["/api/v1/billing/agreements"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page_size")
        .unwrap();
    assert_eq!(page_size["schema"]["minimum"], 1);
    assert_eq!(page_size["schema"]["maximum"], 500);

    // The OAuth2 client-credentials flow next to the bearer scheme, with every scope.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["kindeBearerAuth"]["scheme"], "bearer");
    let flow = &schemes["kindeOAuth2"]["flows"]["clientCredentials"];
    assert_eq!(schemes["kindeOAuth2"]["type"], "oauth2");
    assert_eq!(flow["tokenUrl"], "/oauth2/token");
    for scope in Scope::ALL {
        assert!(flow["scopes"][scope.as_str()].is_string(), "{scope}");
    }
    let form = &doc["paths"]["/oauth2/token"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
        ["schema"];
    let form = if let Some(name) = form["$ref"].as_str() {
        &schemas[name.rsplit('/').next().unwrap()]
    } else {
        form
    };
    assert_eq!(
        form["properties"]["grant_type"]["enum"],
        json!(["client_credentials"])
    );
    assert!(
        form["required"]
            .as_array()
            .unwrap()
            .contains(&json!("grant_type"))
    );
    let scope = form["properties"]["scope"]["pattern"].as_str().unwrap();
    for known in Scope::ALL {
        assert!(scope.contains(known.as_str()), "{scope}");
    }
}
