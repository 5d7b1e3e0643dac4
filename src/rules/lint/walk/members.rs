//! What a property read means on each kind of value: `ctx` members, params keys,
//! incident and output fields (RB003, RB004, RB101, RB103).

use super::{Kind, Walker};
use crate::rules::lint::codes;
use crate::rules::lint::fields::{Lookup, Shape};
use crate::rules::lint::known::did_you_mean;
use rhai::Position;

impl<'a, 'd> Walker<'a, 'd>
where
    'a: 'd,
{
    pub(super) fn member(&mut self, base: Kind<'d>, name: &str, pos: Position) -> Kind<'d> {
        if self.opaque > 0 {
            return Kind::Unknown;
        }
        let len = name.chars().count();
        match base {
            Kind::Ctx => {
                let members = self.known.ctx_members();
                if members.contains(&name) {
                    match name {
                        "params" => Kind::Params,
                        "incident" => self.source_incident(),
                        _ => Kind::Unknown,
                    }
                } else {
                    let near = did_you_mean(name, members.iter().copied());
                    let hint = match near {
                        Some(n) => {
                            format!("did you mean `ctx.{n}`? ctx has: {}", members.join(", "))
                        }
                        None => format!("ctx has: {}", members.join(", ")),
                    };
                    self.finding(
                        codes::UNKNOWN_CTX_MEMBER,
                        pos,
                        len,
                        format!("`ctx` has no member `{name}`"),
                        Some(hint),
                    );
                    Kind::Unknown
                }
            }
            Kind::Params => {
                if let Some(listed) = self.rule.params_keys() {
                    if !listed.contains(&name) {
                        let near = did_you_mean(name, listed.iter().copied());
                        let hint = match near {
                            Some(n) => format!(
                                "did you mean `{n}`? the params schema lists: {}",
                                listed.join(", ")
                            ),
                            None => format!("the params schema lists: {}", listed.join(", ")),
                        };
                        self.finding(
                            codes::UNKNOWN_PARAM,
                            pos,
                            len,
                            format!("rule '{}' has no param `{name}`: its params schema does not list it and pack.toml does not set it, so it always reads as ()", self.rule.name),
                            Some(hint),
                        );
                    }
                }
                Kind::Unknown
            }
            Kind::Shapes { shapes, output } => {
                let mut next: [Option<Shape<'d>>; 2] = [None, None];
                let mut near = None;
                let mut any_known = false;
                for (i, shape) in shapes.iter().enumerate() {
                    let Some(shape) = shape else { continue };
                    match shape.property(name) {
                        Lookup::Open => return Kind::Unknown,
                        Lookup::Known(child) => {
                            any_known = true;
                            next[i] = child;
                        }
                        Lookup::Unknown(n) => near = near.or(n),
                    }
                }
                if any_known {
                    return if next.iter().any(Option::is_some) {
                        Kind::Shapes {
                            shapes: next,
                            output,
                        }
                    } else {
                        Kind::Unknown
                    };
                }
                let (code, what) = if output {
                    (
                        codes::UNKNOWN_OUTPUT_FIELD,
                        "the output schema does not allow a field",
                    )
                } else {
                    (
                        codes::UNKNOWN_INPUT_FIELD,
                        "the input schemas know no incident field",
                    )
                };
                let hint = match near {
                    Some(n) => format!("did you mean `{n}`?"),
                    None if output => {
                        "the field would fail the output schema when written".to_string()
                    }
                    None => "it reads as () on every incident that follows the schema".to_string(),
                };
                self.finding(code, pos, len, format!("{what} `{name}`"), Some(hint));
                Kind::Unknown
            }
            Kind::Unknown => Kind::Unknown,
        }
    }
}
