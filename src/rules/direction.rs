//! The `direction` stage: where one changed field flows. Direction rules are asked in
//! order; the first that returns a flow decides, `()` passes to the next, and when
//! every rule abstains the field is skipped. Each rule's answer is kept as a step (the
//! failing rule's too), for audit rows and `eval --to direction --explain`.

use super::call::{call_rule, RuleError};
use super::compile::CompiledPack;
use super::json::JsonView;
use super::pipeline::{bad_return, failed, step, Decision, ExplainStep, RunOptions};
use crate::model::{FieldChange, Flow, Side, Stage};
use rhai::Dynamic;
use serde_json::Value;
use std::sync::Arc;

impl CompiledPack {
    /// Asks the direction rules, in order, where a changed field should flow. The first
    /// rule that returns a flow decides; `()` means "no opinion, ask the next rule".
    pub fn decide(
        &self,
        change: &FieldChange,
        incident: Arc<Value>,
        only: Option<&str>,
        opts: &RunOptions,
    ) -> Result<Decision, RuleError> {
        let mut steps = Vec::new();
        let decision = self.decide_steps(change, incident, only, opts, &mut steps)?;
        Ok(Decision { steps, ..decision })
    }

    /// [`Self::decide`], with each rule's answer in `steps` instead of the decision, the
    /// failing rule's too: what `eval --to direction --explain` shows.
    pub fn decide_steps(
        &self,
        change: &FieldChange,
        incident: Arc<Value>,
        only: Option<&str>,
        opts: &RunOptions,
        steps: &mut Vec<ExplainStep>,
    ) -> Result<Decision, RuleError> {
        let prepared = self.prepare(incident, Side::Defender, opts);
        let change = Dynamic::from(JsonView::new(Arc::new(change.to_script_value())));
        for rule in self.selected(Stage::Direction, only) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                "direction",
                &change,
                &self.ctx(&prepared, rule),
            )
            .map_err(|e| failed(steps, rule, e))?;
            if out.is_unit() {
                steps.push(step(rule, Vec::new(), Some("()".into()), None));
                continue;
            }
            let flow = out
                .clone()
                .into_immutable_string()
                .ok()
                .and_then(|s| Flow::parse(&s));
            let Some(flow) = flow else {
                let wanted = "\"to_sentinel\", \"to_defender\", \"skip\", \"merge\" or ()";
                return Err(failed(
                    steps,
                    rule,
                    bad_return(rule, "direction", wanted, &out),
                ));
            };
            steps.push(step(rule, Vec::new(), Some(flow.name().into()), None));
            return Ok(Decision {
                flow,
                rule: Some(rule.name.clone()),
                pack_version: self.version.clone(),
                steps: Vec::new(),
            });
        }
        Ok(Decision {
            flow: Flow::Skip,
            rule: None,
            pack_version: self.version.clone(),
            steps: Vec::new(),
        })
    }
}
