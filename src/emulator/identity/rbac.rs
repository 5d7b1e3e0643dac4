//! What a signed-in principal may do once its token is accepted: Graph by the token's
//! application `roles` (Graph reads them from the token, so they are fixed at sign-in),
//! ARM by role-based access control evaluated at every request (ARM looks up role
//! assignments live, so a changed assignment shows without a new token). Pure functions;
//! the routes call them after the audience check.

/// Graph roles that allow reading incidents.
pub const GRAPH_READ: &[&str] = &[
    "SecurityIncident.Read.All",
    "SecurityIncident.ReadWrite.All",
];
/// Graph roles that allow updating incidents and adding comments.
pub const GRAPH_WRITE: &[&str] = &["SecurityIncident.ReadWrite.All"];
/// Graph roles that allow `alerts_v2`. Graph documents `SecurityAlert.Read.All` for it;
/// the emulator also lets the incident roles through, because the sync reads alerts only
/// as the fallback of an incident listing that `$expand=alerts` covers with the incident
/// roles alone (a looser choice than the service's, said here on purpose).
pub const GRAPH_ALERTS: &[&str] = &[
    "SecurityAlert.Read.All",
    "SecurityAlert.ReadWrite.All",
    "SecurityIncident.Read.All",
    "SecurityIncident.ReadWrite.All",
];

/// Whether the token's `roles` hold one of `needed` (role values match exactly, as
/// Graph compares them).
pub fn has_role(roles: &[String], needed: &[&str]) -> bool {
    roles.iter().any(|r| needed.contains(&r.as_str()))
}

/// Whether `pattern` (an RBAC action, `*` matching any run of characters, `/`
/// included) matches `action`, ignoring case as ARM does.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let a: Vec<char> = action.to_ascii_lowercase().chars().collect();
    // Classic greedy wildcard match with backtracking to the last star: linear-ish,
    // and patterns are short.
    let (mut pi, mut ai, mut star, mut mark) = (0, 0, None, 0);
    while ai < a.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ai;
            pi += 1;
        } else if pi < p.len() && p[pi] == a[ai] {
            pi += 1;
            ai += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ai = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `actions` minus `not_actions` allow `action` (ARM's effective permission).
pub fn allowed(actions: &[String], not_actions: &[String], action: &str) -> bool {
    actions.iter().any(|p| action_matches(p, action))
        && !not_actions.iter().any(|p| action_matches(p, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_wildcards_match_case_insensitively_and_not_actions_subtract() {
        let all = vec!["Microsoft.SecurityInsights/*".to_string()];
        assert!(allowed(
            &all,
            &[],
            "microsoft.securityinsights/incidents/comments/write"
        ));
        assert!(!allowed(
            &all,
            &[],
            "Microsoft.Compute/virtualMachines/read"
        ));
        let reader = vec!["*/read".to_string()];
        assert!(allowed(
            &reader,
            &[],
            "Microsoft.SecurityInsights/incidents/read"
        ));
        assert!(!allowed(
            &reader,
            &[],
            "Microsoft.SecurityInsights/incidents/write"
        ));
        let no_delete = vec!["Microsoft.SecurityInsights/incidents/delete".to_string()];
        assert!(!allowed(
            &all,
            &no_delete,
            "Microsoft.SecurityInsights/incidents/delete"
        ));
        assert!(allowed(
            &all,
            &no_delete,
            "Microsoft.SecurityInsights/incidents/write"
        ));
        assert!(action_matches("*", "anything/at/all"));
        assert!(action_matches("a*b*c", "aXXbYYc"));
        assert!(!action_matches("a*b*c", "aXXbYY"));
        assert!(!allowed(&[], &[], "x"));
    }
}
