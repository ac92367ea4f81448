//! The authorization table: every kind of caller × their role in the
//! namespace × every action, and the answer `decide` must give. Each cell is
//! one character per role (none, read, write, admin):
//! `1` 401, `H` 404 (hidden like a missing object), `F` 403,
//! `r`/`w`/`a` granted with the level read/write/admin.

use super::*;
use crate::auth::Credential;
use crate::db::repos::RepoRow;

/// The callers, in the order of a row's cells.
const CALLERS: [&str; 14] = [
    "anonymous",
    "session",
    "site admin session",
    "token read",
    "token write",
    "token read+write+admin",
    "token admin only",
    "token inference only",
    "token rw restricted to namespace acme",
    "token rw restricted to namespace other",
    "token rw restricted to repo acme/m",
    "pull token of acme/m",
    "worker token",
    "site admin token rw",
];

fn token(scopes: &[Scope], ns: Option<&[&str]>, repos: Option<&[&str]>) -> Credential {
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Credential::Token {
        id: 1,
        name: "t".into(),
        scopes: scopes.to_vec(),
        restrict_namespaces: ns.map(list),
        restrict_repos: repos.map(list),
        expires_at: None,
    }
}

fn caller(i: usize) -> Option<Principal> {
    use Scope::*;
    let session = || Credential::Session {
        csrf: "c".into(),
        expires_at: 0,
        version: None,
    };
    let (is_admin, credential) = match i {
        0 => return None,
        1 => (false, session()),
        2 => (true, session()),
        3 => (false, token(&[Read], None, None)),
        4 => (false, token(&[Write], None, None)),
        5 => (false, token(&[Read, Write, Admin], None, None)),
        6 => (false, token(&[Admin], None, None)),
        7 => (false, token(&[Inference], None, None)),
        8 => (false, token(&[Read, Write], Some(&["ACME"]), None)),
        9 => (false, token(&[Read, Write], Some(&["other"]), None)),
        10 => (false, token(&[Read, Write], None, Some(&["model:acme/m"]))),
        11 => (
            false,
            Credential::RepoPull {
                repo_id: 1,
                grant: crate::auth::grants::Grant::Endpoint { id: 1 },
            },
        ),
        12 => (false, Credential::Worker),
        13 => (true, token(&[Read, Write], None, None)),
        _ => unreachable!(),
    };
    Some(Principal {
        user_id: 10,
        name: "u".into(),
        fullname: String::new(),
        is_admin,
        credential,
    })
}

fn repo(private: bool) -> RepoRow {
    RepoRow::sample(1, 2, "acme", "m", private)
}

/// What the action is about: the org `acme`, or its model `acme/m`.
#[derive(Clone, Copy, Debug)]
enum On {
    Namespace,
    PrivateRepo,
    PublicRepo,
}

#[rustfmt::skip]
const TABLE: &[(Action, On, [&str; 14])] = {
    use Action::*;
    use On::*;
    use TokenAction::*;
    &[
        //                                  anon    session sa-sess read    write   rwa     admin   infer   ns-acme ns-oth  repo    pull    worker  sa-rw
        (ReadRepo, PrivateRepo,            ["HHHH", "Hrwa", "Hrwa", "Hrrr", "Hrwa", "Hrwa", "Hrwa", "HHHH", "Hrwa", "HHHH", "Hrwa", "rrrr", "HHHH", "Hrwa"]),
        (ReadRepo, PublicRepo,             ["rrrr", "rrwa", "rrwa", "rrrr", "rrwa", "rrwa", "rrwa", "rrrr", "rrwa", "rrrr", "rrwa", "rrrr", "rrrr", "rrwa"]),
        (WriteRepo, PrivateRepo,           ["HHHH", "HFwa", "HFwa", "HFFF", "HFwa", "HFwa", "HFwa", "HHHH", "HFwa", "HHHH", "HFwa", "FFFF", "HHHH", "HFwa"]),
        (WriteRepo, PublicRepo,            ["FFFF", "FFwa", "FFwa", "FFFF", "FFwa", "FFwa", "FFwa", "FFFF", "FFwa", "FFFF", "FFwa", "FFFF", "FFFF", "FFwa"]),
        (AdminRepo, PrivateRepo,           ["HHHH", "HFFa", "HFFa", "HFFF", "HFFa", "HFFa", "HFFa", "HHHH", "HFFa", "HHHH", "HFFa", "FFFF", "HHHH", "HFFa"]),
        (RequestRepoAccess, PrivateRepo,   ["1111", "rrrr", "rrrr", "FFFF", "rrrr", "rrrr", "FFFF", "FFFF", "rrrr", "FFFF", "rrrr", "FFFF", "FFFF", "rrrr"]),
        (LikeRepo, PublicRepo,             ["1111", "rrrr", "rrrr", "FFFF", "rrrr", "rrrr", "FFFF", "FFFF", "rrrr", "FFFF", "rrrr", "FFFF", "FFFF", "rrrr"]),
        (CreateRepo, Namespace,            ["1111", "FFww", "FFww", "FFFF", "FFww", "FFww", "FFFF", "FFFF", "FFww", "FFFF", "FFFF", "FFFF", "FFFF", "FFww"]),
        (CreateOrg, Namespace,             ["1111", "aaaa", "aaaa", "FFFF", "aaaa", "aaaa", "FFFF", "FFFF", "aaaa", "FFFF", "FFFF", "FFFF", "FFFF", "aaaa"]),
        (ReadNamespace, Namespace,         ["HHHH", "Hrwa", "Hrwa", "Hrrr", "Hrwa", "Hrwa", "Hrwa", "HHHH", "Hrwa", "HHHH", "HHHH", "HHHH", "HHHH", "Hrwa"]),
        (AdminNamespace, Namespace,        ["HHHH", "HFFa", "HFFa", "HFFF", "HFFa", "HFFa", "HFFa", "HHHH", "HFFa", "HHHH", "HHHH", "HHHH", "HHHH", "HFFa"]),
        (LeaveNamespace, Namespace,        ["HHHH", "Hrwa", "Hrwa", "HFFF", "Hrwa", "Hrwa", "HFFa", "HHHH", "Hrwa", "HHHH", "HHHH", "HHHH", "HHHH", "Hrwa"]),
        (ReadEndpoints, Namespace,         ["1111", "Hrwa", "Hrwa", "Hrwa", "Hrwa", "Hrwa", "HFFF", "Hrwa", "Hrwa", "HHHH", "HHHH", "HHHH", "HHHH", "Hrwa"]),
        (ReadUsage, Namespace,             ["1111", "Hrwa", "Hrwa", "Hrwa", "Hrwa", "Hrwa", "HFFF", "Hrwa", "Hrwa", "HHHH", "HHHH", "HHHH", "HHHH", "Hrwa"]),
        (ManageEndpoints, Namespace,       ["1111", "HFwa", "HFwa", "HFFF", "HFwa", "HFwa", "HFFF", "HFFF", "HFwa", "HHHH", "HHHH", "HHHH", "HHHH", "HFwa"]),
        (CallEndpoint { protected: true }, Namespace,
                                           ["1111", "Hrwa", "Hrwa", "HFFF", "Hrwa", "Hrwa", "HFFF", "Hrwa", "Hrwa", "HHHH", "HHHH", "HHHH", "HHHH", "Hrwa"]),
        (CallEndpoint { protected: false }, Namespace,
                                           ["rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr", "rrrr"]),
        (ManageTokens(List), Namespace,    ["1111", "aaaa", "aaaa", "aaaa", "aaaa", "aaaa", "aaaa", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "aaaa"]),
        (ManageTokens(Create), Namespace,  ["1111", "aaaa", "aaaa", "FFFF", "FFFF", "aaaa", "aaaa", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF"]),
        (ManageTokens(Revoke), Namespace,  ["1111", "aaaa", "aaaa", "FFFF", "aaaa", "aaaa", "aaaa", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "aaaa"]),
        (AdministerSite, Namespace,        ["1111", "FFFF", "aaaa", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF", "FFFF"]),
    ]
};

fn code(r: &Result<Access, Denied>) -> char {
    match r {
        Ok(Access::None) => '?',
        Ok(Access::Read) => 'r',
        Ok(Access::Write) => 'w',
        Ok(Access::Admin) => 'a',
        Err(Denied::Unauthenticated(_)) => '1',
        Err(Denied::Hidden(_)) => 'H',
        Err(Denied::Forbidden(_)) => 'F',
    }
}

#[test]
fn decide_table() {
    let roles = [None, Some(Role::Read), Some(Role::Write), Some(Role::Admin)];
    let private = repo(true);
    let public = repo(false);
    let mut wrong = Vec::new();
    for (action, on, cells) in TABLE {
        for (i, want) in cells.iter().enumerate() {
            let p = caller(i);
            let got: String = roles
                .iter()
                .map(|role| {
                    let s = match on {
                        On::Namespace => Standing::namespace("acme", *role, "organization"),
                        On::PrivateRepo => Standing::repo(&private, *role),
                        On::PublicRepo => Standing::repo(&public, *role),
                    };
                    code(&decide(p.as_ref(), &s, *action))
                })
                .collect();
            if got != *want {
                wrong.push(format!(
                    "{action:?} on {on:?} by {}: want {want}, got {got}",
                    CALLERS[i]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every action has a row (a new action without one fails here).
#[test]
fn every_action_has_a_row() {
    use Action::*;
    let all = [
        ReadRepo,
        WriteRepo,
        AdminRepo,
        RequestRepoAccess,
        LikeRepo,
        CreateRepo,
        CreateOrg,
        ReadNamespace,
        AdminNamespace,
        LeaveNamespace,
        ReadEndpoints,
        ManageEndpoints,
        ReadUsage,
        CallEndpoint { protected: true },
        CallEndpoint { protected: false },
        ManageTokens(TokenAction::List),
        ManageTokens(TokenAction::Create),
        ManageTokens(TokenAction::Revoke),
        AdministerSite,
    ];
    for a in all {
        // The match makes adding an `Action` variant a compile error here.
        match a {
            ReadRepo
            | WriteRepo
            | AdminRepo
            | RequestRepoAccess
            | LikeRepo
            | CreateRepo
            | CreateOrg
            | ReadNamespace
            | AdminNamespace
            | LeaveNamespace
            | ReadEndpoints
            | ManageEndpoints
            | ReadUsage
            | CallEndpoint { .. }
            | ManageTokens(_)
            | AdministerSite => {}
        }
        assert!(TABLE.iter().any(|(x, _, _)| *x == a), "no row for {a:?}");
    }
}

/// A missing namespace answers like one the caller may not see, after the
/// 401 for anonymous callers where the action needs credentials.
#[test]
fn missing_namespace_is_hidden() {
    let s = Standing::missing("namespace");
    let p = caller(1);
    for a in [
        Action::ReadEndpoints,
        Action::ManageEndpoints,
        Action::ReadUsage,
        Action::ReadNamespace,
        Action::AdminNamespace,
    ] {
        assert_eq!(
            decide(p.as_ref(), &s, a),
            Err(Denied::Hidden(Hidden::Object("namespace")))
        );
    }
    assert_eq!(
        decide(None, &s, Action::ReadEndpoints),
        Err(Denied::Unauthenticated(AUTH_REQUIRED))
    );
}
