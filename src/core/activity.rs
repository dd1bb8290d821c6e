//! Each group's most recent launch, from one sweep of an account and Region's scaling
//! activities. Pure: the pages come in, the launches and where to stop next time come out.
//!
//! DescribeScalingActivities without a group name describes the activities of every group
//! in the account and Region, up to 100 a page: those still in progress first, then by
//! start time, newest first (EC2 Auto Scaling API Reference, DescribeScalingActivities).
//! One sweep per account and Region therefore replaces one call per group, and a sweep
//! stops where the last one left off: at the newest activity that had ended below every
//! one still in progress. What it found below that point is kept, so a steady state costs
//! one page per account and Region.
//!
//! An activity in progress moves down the list to its start time once it ends, perhaps
//! below the cursor: while a group's most recent launch is in progress, the next sweep
//! reads past the cursor to see how it ended.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::core::model::LaunchActivity;

/// Pages one sweep reads at most (100 activities a page). A group whose most recent
/// launch is older than this many activities of its Region has no recent launch.
pub const MAX_PAGES: usize = 20;

/// One activity as DescribeScalingActivities shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub id: String,
    pub group: String,
    pub launch: LaunchActivity,
}

impl Activity {
    /// A launch is an activity described as "Launching a new EC2 instance…"; when an EBS
    /// volume's key cannot be used it fails with `Client.InternalError: Client error on
    /// launch` (EC2 Auto Scaling User Guide, troubleshooting).
    pub fn is_launch(&self) -> bool {
        self.launch.description.starts_with("Launching a new EC2 instance")
    }

    /// Whether the activity has ended: its status will not change again (EC2 Auto
    /// Scaling API Reference, Activity, StatusCode).
    fn ended(&self) -> bool {
        matches!(self.launch.status_code.as_str(), "Successful" | "Failed" | "Cancelled")
    }
}

/// What the last sweep of one account and Region left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// The newest activity below which every activity seen had ended: the next sweep
    /// stops there.
    cursor: Option<String>,
    /// The groups that sweep looked for: a group it did not look for may have an older
    /// launch below the cursor, so a sweep for it reads past the cursor.
    groups: BTreeSet<String>,
    /// The most recent launch found for each group, at the cursor or below.
    launches: HashMap<String, LaunchActivity>,
}

/// One sweep under way.
#[derive(Debug)]
pub struct Sweep<'a> {
    last: &'a Swept,
    wanted: BTreeSet<String>,
    /// May it stop at the last sweep's cursor? Not when it looks for a group the last
    /// sweep did not.
    stop_at_cursor: bool,
    found: HashMap<String, LaunchActivity>,
    /// The newest ended activity after the last one still in progress, so far.
    cursor: Option<String>,
    pages: usize,
    done: bool,
}

impl<'a> Sweep<'a> {
    pub fn new(last: &'a Swept, wanted: impl IntoIterator<Item = String>) -> Self {
        let wanted: BTreeSet<String> = wanted.into_iter().collect();
        let stop_at_cursor = last.cursor.is_some() && wanted.is_subset(&last.groups);
        Sweep { last, wanted, stop_at_cursor, found: HashMap::new(), cursor: None, pages: 0, done: false }
    }

    /// Takes one page, newest first; returns whether the next page is wanted. It is not
    /// once the sweep reaches the last sweep's cursor, has found a launch for every group
    /// it looks for, or has read [`MAX_PAGES`].
    pub fn page(&mut self, activities: impl IntoIterator<Item = Activity>, more: bool) -> bool {
        self.pages += 1;
        for a in activities {
            if self.stop_at_cursor && self.last.cursor.as_deref() == Some(a.id.as_str()) {
                self.done = true;
                break;
            }
            match (a.ended(), &self.cursor) {
                (false, _) => self.cursor = None,
                (true, None) => self.cursor = Some(a.id.clone()),
                (true, Some(_)) => {}
            }
            if a.is_launch() && self.wanted.contains(&a.group) && !self.found.contains_key(&a.group) {
                self.found.insert(a.group.clone(), a.launch);
                if self.found.len() == self.wanted.len() {
                    self.done = true;
                    break;
                }
            }
        }
        !self.done && more && self.pages < MAX_PAGES
    }

    /// Each wanted group's most recent launch (None: none among the activities read, nor
    /// below the last sweep's cursor), and what the next sweep starts from.
    pub fn finish(self) -> (BTreeMap<String, Option<LaunchActivity>>, Swept) {
        let Sweep { last, wanted, found, cursor, .. } = self;
        let mut launches = last.launches.clone();
        launches.retain(|g, _| wanted.contains(g));
        launches.extend(found);
        let result = wanted.iter().map(|g| (g.clone(), launches.get(g).cloned())).collect();
        let settled =
            launches.values().all(|l| matches!(l.status_code.as_str(), "Successful" | "Failed" | "Cancelled"));
        let cursor = if settled { cursor.or_else(|| last.cursor.clone()) } else { None };
        let next = Swept { cursor, groups: wanted, launches };
        (result, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(id: u32, group: &str, status: &str) -> Activity {
        Activity {
            id: format!("a{id}"),
            group: group.into(),
            launch: LaunchActivity {
                status_code: status.into(),
                status_message: None,
                start_time: None,
                description: format!("Launching a new EC2 instance: i-{id}"),
            },
        }
    }

    fn other(id: u32, group: &str) -> Activity {
        let mut a = act(id, group, "Successful");
        a.launch.description = "Terminating EC2 instance: i-1".into();
        a
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn code(r: &BTreeMap<String, Option<LaunchActivity>>, g: &str) -> Option<String> {
        r[g].as_ref().map(|l| l.status_code.clone())
    }

    #[test]
    fn the_first_launch_of_each_group_newest_first_is_its_most_recent() {
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["web", "api", "idle"]));
        let more = s.page(
            [other(9, "web"), act(8, "web", "Failed"), act(7, "api", "Successful"), act(6, "web", "Successful")],
            true,
        );
        assert!(more, "idle is not found yet");
        assert!(!s.page([act(5, "x", "Successful")], false), "no more pages");
        let (r, next) = s.finish();
        assert_eq!(code(&r, "web").as_deref(), Some("Failed"));
        assert_eq!(code(&r, "api").as_deref(), Some("Successful"));
        assert_eq!(r["idle"], None);
        assert_eq!(next.cursor.as_deref(), Some("a9"));
    }

    #[test]
    fn a_sweep_stops_once_every_group_is_found() {
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["web"]));
        assert!(!s.page([act(3, "web", "Successful"), act(2, "web", "Failed")], true));
        assert_eq!(code(&s.finish().0, "web").as_deref(), Some("Successful"));
    }

    #[test]
    fn the_next_sweep_stops_at_the_cursor_and_keeps_what_lay_below_it() {
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["web", "api"]));
        s.page([act(5, "web", "Failed"), act(4, "api", "Successful")], false);
        let (_, swept) = s.finish();
        // Two new activities, neither a launch of api: the sweep reads one page, stops at
        // a5, and api's launch comes from the last sweep.
        let mut s = Sweep::new(&swept, groups(&["web", "api"]));
        let more = s.page(
            [other(7, "x"), act(6, "web", "Successful"), act(5, "web", "Failed"), act(4, "api", "Successful")],
            true,
        );
        assert!(!more, "the cursor was reached");
        let (r, next) = s.finish();
        assert_eq!(code(&r, "web").as_deref(), Some("Successful"));
        assert_eq!(code(&r, "api").as_deref(), Some("Successful"));
        assert_eq!(next.cursor.as_deref(), Some("a7"));
    }

    #[test]
    fn an_activity_in_progress_is_read_again_next_time() {
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["web", "api"]));
        s.page([act(5, "web", "InProgress"), act(4, "api", "Successful")], false);
        let (r, swept) = s.finish();
        assert_eq!(code(&r, "web").as_deref(), Some("InProgress"));
        assert_eq!(swept.cursor, None, "web's launch is in progress: the next sweep does not stop early");
        let mut s = Sweep::new(&swept, groups(&["web", "api"]));
        s.page([act(5, "web", "Failed"), act(4, "api", "Successful")], false);
        assert_eq!(code(&s.finish().0, "web").as_deref(), Some("Failed"), "its end is seen");
    }

    #[test]
    fn a_launch_that_ends_below_the_cursor_is_still_seen_to_end() {
        // a1 (web's launch) is in progress, listed first; a2, newer, has ended. Once a1
        // ends it is listed by its start time, below a2.
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["web", "api"]));
        s.page([act(1, "web", "InProgress"), act(2, "api", "Successful")], false);
        let (_, swept) = s.finish();
        let mut s = Sweep::new(&swept, groups(&["web", "api"]));
        s.page([act(2, "api", "Successful"), act(1, "web", "Failed")], false);
        let (r, swept) = s.finish();
        assert_eq!(code(&r, "web").as_deref(), Some("Failed"));
        assert_eq!(swept.cursor.as_deref(), Some("a2"), "settled: the next sweep may stop at a2");
    }

    #[test]
    fn a_group_the_last_sweep_did_not_look_for_reads_past_the_cursor() {
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["web"]));
        s.page([act(5, "web", "Successful"), act(4, "new", "Failed")], false);
        let (_, swept) = s.finish();
        let mut s = Sweep::new(&swept, groups(&["web", "new"]));
        assert!(!s.page([act(5, "web", "Successful"), act(4, "new", "Failed")], true), "both found");
        assert_eq!(code(&s.finish().0, "new").as_deref(), Some("Failed"));
    }

    #[test]
    fn a_sweep_reads_at_most_max_pages() {
        let last = Swept::default();
        let mut s = Sweep::new(&last, groups(&["never"]));
        let mut pages = 1;
        while s.page([other(pages as u32, "x")], true) {
            pages += 1;
        }
        assert_eq!(pages, MAX_PAGES);
        assert_eq!(s.finish().0["never"], None);
    }
}
