//! The page shell every page shares: head (one stylesheet, no inline
//! script or style), the navigation with the sign-out form, the `#flash`
//! message, and the main content.

use maud::{DOCTYPE, Markup, html};

use super::session::Flash;
use super::signed::Signed;

/// What the navigation needs: who is signed in, which account is shown.
pub struct Nav<'a> {
    pub signed: &'a Signed,
    pub account: Option<&'a str>,
}

pub fn page(title: &str, nav: Option<&Nav>, flash: Option<&Flash>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · textcredits" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.top {
                    span.brand { "textcredits" }
                    @if let Some(nav) = nav { (navigation(nav)) }
                }
                main {
                    h1 { (title) }
                    @if let Some(f) = flash {
                        @if f.ok {
                            p #flash .flash.ok role="status" { (f.text) }
                        } @else {
                            p #flash .flash.error role="alert" { (f.text) }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

fn navigation(nav: &Nav) -> Markup {
    html! {
        nav aria-label="Main" {
            ul {
                @if let Some(a) = nav.account {
                    li { a href={ "/a/" (a) } { "Credits" } }
                    li { a href={ "/a/" (a) "/purchases" } { "Purchases" } }
                    li { a href={ "/a/" (a) "/statements" } { "Statements" } }
                    li { a #purchase-open href={ "/a/" (a) "/buy" } { "Purchase credits" } }
                }
                @if nav.signed.is_admin() {
                    li { a href="/accounts" { "Accounts" } }
                    li { a href="/statements" { "Month statements" } }
                }
                li {
                    form #sign-out method="post" action="/sign-out" {
                        (csrf_field(&nav.signed.session.csrf))
                        button type="submit" { "Sign out" }
                    }
                }
            }
        }
    }
}

/// The hidden CSRF field of every form.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}
