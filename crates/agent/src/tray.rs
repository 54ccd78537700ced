//! The workstation's tray item (the original's menu bar): a StatusNotifierItem with a
//! com.canonical.dbusmenu menu, straight on D-Bus (zbus, no GUI toolkit). It shows the
//! connection, the certificate, what waits and the keys, with the actions Refresh
//! Keys, Request Certificate, Drop Certificate, Copy public keys and Open log; the icon
//! shows connected, disconnected and waiting apart. No session bus, or no tray host
//! (StatusNotifierWatcher) on it: the agent runs as before and says once why there is
//! no tray. The menu only shows and asks: nothing in it approves anything.

use crate::agent::Agent;
use crate::status::Status;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zbus::object_server::SignalEmitter;
use zbus::wire::StructureBuilder;
use zbus::{interface, OwnedVariant, Str, Structure, Type, Variant};

const ITEM_PATH: &str = "/StatusNotifierItem";
const MENU_PATH: &str = "/MenuBar";

/// Menu item ids of the actions (the lines above them are numbered from 1).
const REFRESH: i32 = 1001;
const REQUEST_CERT: i32 = 1002;
const DROP_CERT: i32 = 1003;
const COPY_KEYS: i32 = 1004;
const OPEN_LOG: i32 = 1005;

/// What the tray shows, rebuilt from the agent's status on every change.
#[derive(Default)]
struct Shown {
    status: Status,
    revision: u32,
}

type State = Arc<Mutex<Shown>>;

/// Show the tray item until the agent stops (`tray = "off"`: never).
pub async fn run(agent: Arc<Agent>) {
    if agent.config.tray == "off" {
        return;
    }
    if !vmux_proto::desktop::session_bus_available() {
        tracing::info!("no tray: this agent runs without a desktop session bus");
        return;
    }
    if let Err(e) = serve(agent).await {
        tracing::info!("no tray: {e}");
    }
}

async fn serve(agent: Arc<Agent>) -> Result<(), String> {
    // Follow changes from before the first status is read: a change while the bus
    // connection is set up (the signer connects) would otherwise never be shown.
    let mut changes = agent.watch_status();
    let state: State = Arc::new(Mutex::new(Shown {
        status: agent.status(),
        revision: 1,
    }));
    let name = format!("org.kde.StatusNotifierItem-{}-1", std::process::id());
    let conn = zbus::connection::Builder::session()
        .name(name.as_str())
        .serve_at(
            ITEM_PATH,
            Item {
                state: state.clone(),
            },
        )
        .serve_at(
            MENU_PATH,
            Menu {
                state: state.clone(),
                agent: agent.clone(),
                rt: tokio::runtime::Handle::current(),
            },
        )
        .build()
        .await
        .map_err(|e| format!("cannot reach the session bus ({e})"))?;
    let registered = conn
        .call_method(
            Some("org.kde.StatusNotifierWatcher"),
            "/StatusNotifierWatcher",
            Some("org.kde.StatusNotifierWatcher"),
            "RegisterStatusNotifierItem",
            &(name.as_str(),),
        )
        .await;
    if let Err(e) = registered {
        return Err(format!(
            "the desktop has no tray host (no StatusNotifierWatcher on the session bus: {e})"
        ));
    }
    tracing::info!("tray item shown ({name})");
    let item = conn
        .object_server()
        .interface::<_, Item>(ITEM_PATH)
        .await
        .map_err(|e| e.to_string())?;
    let menu = conn
        .object_server()
        .interface::<_, Menu>(MENU_PATH)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if changes.changed().await.is_err() {
            return Ok(());
        }
        let revision = {
            let mut s = state.lock().unwrap();
            s.status = agent.status();
            s.revision += 1;
            s.revision
        };
        // A tray host that went away makes these fail; the item stays ready for it.
        let e = item.signal_emitter();
        let _ = Item::new_icon(e).await;
        let word = status_word(&state.lock().unwrap().status);
        let _ = Item::new_status(e, word).await;
        let _ = Item::new_tool_tip(e).await;
        let _ = Item::new_title(e).await;
        let _ = Menu::layout_updated(menu.signal_emitter(), revision, 0).await;
    }
}

fn status_word(s: &Status) -> &'static str {
    match s.state() {
        "waiting" => "NeedsAttention",
        _ => "Active",
    }
}

fn icon(s: &Status) -> &'static str {
    match s.state() {
        "waiting" => "dialog-password",
        "connected" => "security-high",
        _ => "security-low",
    }
}

/// The first lines of the menu, in order: connection, certificate, waiting, keys.
fn lines(s: &Status, agent: &Agent) -> Vec<String> {
    let mut l = vec![
        s.connection_line.clone(),
        format!("Certificate: {}", s.certificate_line),
    ];
    for w in &s.waiting {
        l.push(w.line());
    }
    let keys = agent.cached_keys();
    if keys.is_empty() {
        l.push("No keys yet (Refresh Keys asks the signers)".into());
    }
    for k in keys {
        l.push(format!(
            "{}  {}  [{}]",
            k.record.comment,
            vmux_proto::identity::key_fingerprint(&k.record.public_key),
            k.record.provider
        ));
    }
    l
}

/// `(icon, pixmaps, title, text)`, as StatusNotifierItem's ToolTip property is laid out.
type ToolTip = (String, Vec<(i32, i32, Vec<u8>)>, String, String);

struct Item {
    state: State,
}

#[interface(name = "org.kde.StatusNotifierItem")]
impl Item {
    #[zbus(property)]
    fn category(&self) -> &str {
        "ApplicationStatus"
    }
    #[zbus(property)]
    fn id(&self) -> &str {
        "vmux-agent"
    }
    #[zbus(property)]
    fn title(&self) -> String {
        format!(
            "vmux: {}",
            self.state.lock().unwrap().status.connection_line
        )
    }
    #[zbus(property)]
    fn status(&self) -> &str {
        status_word(&self.state.lock().unwrap().status)
    }
    #[zbus(property)]
    fn icon_name(&self) -> &str {
        icon(&self.state.lock().unwrap().status)
    }
    #[zbus(property)]
    fn attention_icon_name(&self) -> &str {
        "dialog-password"
    }
    #[zbus(property)]
    fn item_is_menu(&self) -> bool {
        true
    }
    #[zbus(property)]
    fn menu(&self) -> zbus::ObjectPath<'static> {
        zbus::ObjectPath::from_static_str_unchecked(MENU_PATH)
    }
    /// `(icon, pixmaps, title, text)`: the connection and certificate lines, and what
    /// waits.
    #[zbus(property)]
    fn tool_tip(&self) -> ToolTip {
        let s = &self.state.lock().unwrap().status;
        let mut text = format!("Certificate: {}", s.certificate_line);
        for w in &s.waiting {
            text += &format!("\n{}", w.line());
        }
        (icon(s).into(), vec![], s.connection_line.clone(), text)
    }
    fn activate(&self, _x: i32, _y: i32) {}
    fn secondary_activate(&self, _x: i32, _y: i32) {}
    fn context_menu(&self, _x: i32, _y: i32) {}
    fn scroll(&self, _delta: i32, _orientation: &str) {}

    #[zbus(signal)]
    async fn new_icon(e: &SignalEmitter<'_>) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn new_status(e: &SignalEmitter<'_>, status: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn new_tool_tip(e: &SignalEmitter<'_>) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn new_title(e: &SignalEmitter<'_>) -> zbus::Result<()>;
}

/// One menu entry: `(id, properties, children)` as com.canonical.dbusmenu lays it out.
#[derive(Serialize, Type)]
struct Layout(i32, HashMap<String, OwnedVariant>, Vec<OwnedVariant>);

fn prop(v: impl Into<Variant<'static>>) -> OwnedVariant {
    OwnedVariant::try_from(v.into()).expect("a plain value")
}

fn entry(id: i32, label: Option<&str>, enabled: bool) -> OwnedVariant {
    let mut p: HashMap<String, Variant<'static>> = HashMap::new();
    match label {
        Some(l) => {
            p.insert("label".into(), Variant::from(Str::from(l.to_string())));
        }
        None => {
            p.insert("type".into(), Variant::from("separator"));
        }
    }
    p.insert("enabled".into(), Variant::from(enabled));
    let s: Structure<'static> = StructureBuilder::new()
        .add_field(id)
        .add_field(p)
        .add_field(Vec::<OwnedVariant>::new())
        .build()
        .expect("a menu entry is a structure");
    prop(Variant::from(s))
}

struct Menu {
    state: State,
    agent: Arc<Agent>,
    /// D-Bus calls arrive on zbus's own executor: the agent's work runs on its runtime.
    rt: tokio::runtime::Handle,
}

impl Menu {
    fn items(&self) -> Vec<OwnedVariant> {
        let s = self.state.lock().unwrap();
        let mut items: Vec<OwnedVariant> = lines(&s.status, &self.agent)
            .iter()
            .enumerate()
            .map(|(i, l)| entry(i as i32 + 1, Some(l), false))
            .collect();
        items.push(entry(999, None, true));
        for (id, label) in [
            (REFRESH, "Refresh Keys"),
            (REQUEST_CERT, "Request Certificate"),
            (DROP_CERT, "Drop Certificate"),
            (COPY_KEYS, "Copy public keys"),
            (OPEN_LOG, "Open log"),
        ] {
            items.push(entry(id, Some(label), true));
        }
        items
    }

    fn clicked(&self, id: i32) {
        let agent = self.agent.clone();
        match id {
            REFRESH => {
                self.rt.spawn(async move {
                    let n = agent.refresh().await;
                    tracing::info!("tray: asked {n} connected signer(s) for their keys");
                });
            }
            REQUEST_CERT => {
                self.rt.spawn(async move {
                    let validity = agent.certs.lock().unwrap().validity;
                    if let Err(r) = agent.request_cert(validity, true, None).await {
                        tracing::warn!("tray: session certificate: {}", r.reason);
                    }
                });
            }
            DROP_CERT => {
                let _guard = self.rt.enter();
                agent.drop_cert("dropped from the tray");
            }
            COPY_KEYS => copy_keys(&agent),
            OPEN_LOG => {
                let _ = std::process::Command::new("xdg-open")
                    .arg(agent.home.log())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
            }
            _ => {}
        }
    }
}

/// The public keys as authorized_keys lines, onto the clipboard (wl-copy, xclip or
/// xsel), else into `agent/public_keys` with a line saying where.
fn copy_keys(agent: &Agent) {
    use ssh_key::encoding::Decode;
    let text: String = agent
        .cached_keys()
        .iter()
        .filter_map(|k| {
            let data =
                ssh_key::public::KeyData::decode(&mut k.record.public_key.as_slice()).ok()?;
            ssh_key::PublicKey::new(data, k.record.comment.clone())
                .to_openssh()
                .ok()
        })
        .map(|l| l + "\n")
        .collect();
    for (program, args) in [
        ("wl-copy", &[][..]),
        ("xclip", &["-selection", "clipboard"][..]),
        ("xsel", &["--clipboard", "--input"][..]),
    ] {
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(mut c) = child {
            use std::io::Write;
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(text.as_bytes());
            }
            if c.wait().is_ok_and(|s| s.success()) {
                tracing::info!("tray: public keys copied to the clipboard ({program})");
                return;
            }
        }
    }
    let path = agent.home.dir.join("public_keys");
    match vmux_proto::store::write_atomic(&path, text.as_bytes(), 0o644) {
        Ok(()) => tracing::info!(
            "tray: no clipboard tool (wl-copy, xclip, xsel); the public keys are in {}",
            path.display()
        ),
        Err(e) => tracing::warn!("tray: {e}"),
    }
}

#[interface(name = "com.canonical.dbusmenu")]
impl Menu {
    #[zbus(property)]
    fn version(&self) -> u32 {
        3
    }
    #[zbus(property)]
    fn text_direction(&self) -> &str {
        "ltr"
    }
    #[zbus(property)]
    fn status(&self) -> &str {
        "normal"
    }
    #[zbus(property)]
    fn icon_theme_path(&self) -> Vec<String> {
        vec![]
    }

    /// The whole menu (it is one level deep), whatever part was asked for.
    fn get_layout(
        &self,
        _parent_id: i32,
        _recursion_depth: i32,
        _property_names: Vec<String>,
    ) -> (u32, Layout) {
        let revision = self.state.lock().unwrap().revision;
        let mut root = HashMap::new();
        root.insert(
            "children-display".to_string(),
            prop(Variant::from("submenu")),
        );
        (revision, Layout(0, root, self.items()))
    }

    fn get_group_properties(
        &self,
        ids: Vec<i32>,
        _property_names: Vec<String>,
    ) -> Vec<(i32, HashMap<String, OwnedVariant>)> {
        let s = self.state.lock().unwrap();
        let l = lines(&s.status, &self.agent);
        ids.into_iter()
            .filter_map(|id| {
                let label = match id {
                    1.. if (id as usize) <= l.len() => l[id as usize - 1].clone(),
                    REFRESH => "Refresh Keys".into(),
                    REQUEST_CERT => "Request Certificate".into(),
                    DROP_CERT => "Drop Certificate".into(),
                    COPY_KEYS => "Copy public keys".into(),
                    OPEN_LOG => "Open log".into(),
                    _ => return None,
                };
                let mut p = HashMap::new();
                p.insert("label".to_string(), prop(Variant::from(Str::from(label))));
                p.insert("enabled".to_string(), prop(Variant::from(id >= REFRESH)));
                Some((id, p))
            })
            .collect()
    }

    fn get_property(&self, id: i32, name: String) -> zbus::fdo::Result<OwnedVariant> {
        self.get_group_properties(vec![id], vec![])
            .into_iter()
            .next()
            .and_then(|(_, mut p)| p.remove(&name))
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs(format!("no property {name} on {id}")))
    }

    fn event(&self, id: i32, event_id: String, _data: OwnedVariant, _timestamp: u32) {
        if event_id == "clicked" {
            self.clicked(id);
        }
    }

    fn event_group(&self, events: Vec<(i32, String, OwnedVariant, u32)>) -> Vec<i32> {
        for (id, event_id, _, _) in events {
            if event_id == "clicked" {
                self.clicked(id);
            }
        }
        vec![]
    }

    fn about_to_show(&self, _id: i32) -> bool {
        false
    }

    fn about_to_show_group(&self, _ids: Vec<i32>) -> (Vec<i32>, Vec<i32>) {
        (vec![], vec![])
    }

    #[zbus(signal)]
    async fn layout_updated(e: &SignalEmitter<'_>, revision: u32, parent: i32) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn items_properties_updated(
        e: &SignalEmitter<'_>,
        updated: Vec<(i32, HashMap<String, OwnedVariant>)>,
        removed: Vec<(i32, Vec<String>)>,
    ) -> zbus::Result<()>;
}
