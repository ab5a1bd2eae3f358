use memory_core::*;
#[test]
fn scratch() {
    let mut e = Episode::start(NewEpisode::new("t", TaskType::Debugging, TaskContext::new("d")), chrono::Utc::now());
    e.steps.push(ExecutionStep { step_number: 1, timestamp: chrono::Utc::now(), input: StepInput::ok("a","b","c").with_parameters(serde_json::json!({"x":1})) });
    let cfg = bincode::config::standard().with_limit::<1000000>();
    let r = bincode::serde::encode_to_vec(&e, cfg);
    println!("encode episode: {:?}", r.as_ref().map(|v| v.len()));
    if let Ok(b) = r { let d: Result<(Episode, usize), _> = bincode::serde::decode_from_slice(&b, cfg); println!("decode: {:?}", d.map(|x| x.0 == e)); }
    let o = Outcome::success("x");
    let b = bincode::serde::encode_to_vec(&o, cfg).unwrap();
    let d: Result<(Outcome, usize), _> = bincode::serde::decode_from_slice(&b, cfg); println!("outcome decode: {:?}", d);
    let s = LearnedStatus::Active;
    let b = bincode::serde::encode_to_vec(&s, cfg).unwrap();
    let d: Result<(LearnedStatus, usize), _> = bincode::serde::decode_from_slice(&b, cfg); println!("status decode: {:?}", d);
}
