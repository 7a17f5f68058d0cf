//! The fast MessagePack reader agrees with serde on every message a scenario generates.

use retailflow::domain::fastpack::decode_envelope;

fn serde(b: &[u8]) -> Option<retailflow::domain::Envelope> {
    rmp_serde::from_slice(b).ok()
}

#[test]
fn agrees_with_serde_on_generated_events() {
    let spec: retailflow_lab::spec::Scenario = toml::from_str(
        r#"
        name = "t"
        [world]
        stores = 4
        dcs = 2
        skus = 50
        store_assortment = 30
        [load]
        events = 3000
        [faults]
        poison = 20
        "#,
    )
    .unwrap();
    let world = std::sync::Arc::new(retailflow_lab::world::World::build(&spec).unwrap());
    let mut g = retailflow_lab::generate::Generator::new(&spec, world);
    let mut fast = 0;
    while let Some((out, env)) = g.next_message() {
        let bytes = &out.payload;
        if let Ok(e) = decode_envelope(bytes) {
            fast += 1;
            assert_eq!(Some(&e), serde(bytes).as_ref(), "fast path differs");
            if let Some(env) = env {
                assert_eq!(e, env);
            }
        }
    }
    assert!(fast > 2500, "the fast path took {fast} messages");
}
