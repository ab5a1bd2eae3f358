use std::sync::Arc;

use super::*;
use crate::learning::WorldName;
use memory_core::{InMemoryStorage, MemoryConfig};

/// Records an episode of `task` with these steps and outcome.
async fn record(
    memory: &SelfLearningMemory,
    ns: &Namespace,
    task: &Task,
    steps: Vec<StepInput>,
    outcome: Outcome,
) -> Result<EpisodeId> {
    let new = NewEpisode::new(
        task.description.clone(),
        task.task_type,
        task.context.clone(),
    );
    let id = memory.start_episode(ns, new).await?;
    for step in steps {
        memory.log_step(ns, id, step).await?;
    }
    memory.complete_episode(ns, id, outcome).await?;
    Ok(id)
}

/// A step of `tool` that worked.
fn worked(tool: &str) -> StepInput {
    StepInput::ok(tool, format!("run {tool}"), format!("{tool}: ok"))
}

/// Records a failed try at `task`: one wrong tool, then the first `done` steps of its
/// procedure, then the budget runs out.
async fn failed_try(
    memory: &SelfLearningMemory,
    ns: &Namespace,
    task: &Task,
    done: usize,
) -> Result<EpisodeId> {
    let wrong = format!("{NOT_APPLICABLE} (wrong tool)");
    let mut steps = vec![StepInput::error("scaffold", "run scaffold", wrong)];
    steps.extend(task.sequence().iter().take(done).map(|t| worked(t)));
    let outcome = Outcome::failure("step budget of 20 used up");
    record(memory, ns, task, steps, outcome).await
}

#[tokio::test]
async fn a_task_no_one_has_finished_starts_where_the_furthest_try_stopped() -> Result<()> {
    let world = World::new(WorldName::Tuning, 3, 0.0)?;
    let task = world.task(0);
    let memory =
        SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
    let ns = Namespace::new("eval/agent-test")?;
    failed_try(&memory, &ns, &task, 1).await?;
    let furthest = failed_try(&memory, &ns, &task, 3).await?;
    failed_try(&memory, &ns, &task, 2).await?;
    let config = LearningEvalConfig::default();
    let agent = Agent {
        world: &world,
        memory: &memory,
        ns: &ns,
        arm: Arm::FullMemory,
        config: &config,
    };

    let advice = agent.consult(&task).await?;

    assert_eq!(advice.source, Some(PlanSource::Attempt(furthest)));
    assert_eq!(advice.plan, task.sequence()[..3].to_vec());
    Ok(())
}

#[tokio::test]
async fn with_no_plan_left_the_next_step_comes_from_a_similar_success_that_agrees_so_far()
-> Result<()> {
    let world = World::new(WorldName::Tuning, 3, 0.0)?;
    let task = world.task(0);
    let tools = world.tools(task.task_type);
    let (a, b, c, d) = (
        tools[0].as_str(),
        tools[1].as_str(),
        tools[2].as_str(),
        tools[3].as_str(),
    );
    let setup = world.recovery_tools()[0].as_str();
    let memory =
        SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
    let ns = Namespace::new("eval/agent-test")?;
    let success = |tools: &[&str]| tools.iter().map(|t| worked(t)).collect::<Vec<_>>();
    let done = || Outcome::success("done");
    let first = record(&memory, &ns, &task, success(&[a, b, c]), done()).await?;
    let steps = success(&[a, setup, a, d, b]);
    let second = record(&memory, &ns, &task, steps, done()).await?;
    let config = LearningEvalConfig::default();
    let agent = Agent {
        world: &world,
        memory: &memory,
        ns: &ns,
        arm: Arm::EpisodesOnly,
        config: &config,
    };
    let advice = agent.consult(&task).await?;
    assert_eq!(advice.successes.len(), 2);
    assert!(advice.successes.contains(&first) && advice.successes.contains(&second));
    let mut alternatives = Alternatives {
        unread: advice.successes.clone(),
        sequences: Vec::new(),
    };
    let all: Vec<&str> = tools.iter().map(String::as_str).collect();
    let worked = vec![a.to_owned()];

    // After `a`, both successes agree so far; with their next steps tried, the other one.
    let next = agent.alternative(&mut alternatives, &worked, &all).await?;
    assert!(next.as_deref() == Some(b) || next.as_deref() == Some(d));
    let without_b: Vec<&str> = all.iter().copied().filter(|t| *t != b).collect();
    let next = agent
        .alternative(&mut alternatives, &worked, &without_b)
        .await?;
    assert_eq!(
        next.as_deref(),
        Some(d),
        "the setup step is not a main step"
    );
    let without_d: Vec<&str> = all.iter().copied().filter(|t| *t != d).collect();
    let next = agent
        .alternative(&mut alternatives, &worked, &without_d)
        .await?;
    assert_eq!(next.as_deref(), Some(b));
    // A run that took another way than both has no alternative, nor one past their end.
    let other = vec![c.to_owned()];
    assert_eq!(
        agent.alternative(&mut alternatives, &other, &all).await?,
        None
    );
    let finished = vec![a.to_owned(), b.to_owned(), c.to_owned()];
    assert_eq!(
        agent
            .alternative(&mut alternatives, &finished, &all)
            .await?,
        None
    );
    Ok(())
}
