/**
 * i18n.js: the demo page's strings in English, French and Spanish. The language is the person's
 * choice on the page (kept in localStorage), else the first of the browser's languages we have,
 * else English. `apply(root)` fills every `[data-i18n]` element's text and every
 * `[data-i18n-<attribute>]` attribute (`data-i18n-aria-label`, `data-i18n-placeholder`).
 */

const STRINGS = {
  en: {
    title: "Voice chat",
    subtitle: "Talk with the assistant, or type.",
    skip: "Skip to the message box",
    upstreamEmulator: "Built-in OpenAI emulator (offline, no OpenAI key)",
    upstreamOpenai: "OpenAI Realtime",
    conversation: "Conversation",
    emptyTitle: "Ready when you are",
    emptyBody: "Press Start call, allow the microphone, and say hello. What you say and what the assistant answers will appear here, and stay here next time.",
    live: "Now speaking",
    you: "You",
    assistant: "Assistant",
    earlier: "Earlier conversation",
    activity: "Voice activity",
    micLevel: "Your voice",
    agentLevel: "Assistant's voice",
    start: "Start call",
    continue: "Continue this conversation",
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    mute: "Mute",
    unmute: "Unmute",
    end: "End call",
    messageLabel: "Type a message to the assistant",
    messageIdle: "Start a call to type a message",
    messageReady: "Type a message…",
    send: "Send",
    settings: "Settings",
    language: "Language",
    voice: "Voice",
    connection: "Connection",
    modeRelay: "Through the relay (works on locked-down networks)",
    modeDirect: "Direct to OpenAI (needs access to OpenAI)",
    clear: "Clear conversation",
    dismiss: "Dismiss this message",
    notConnected: "Not connected",
    connected: "Connected",
    callEnded: "Call ended",
    via: "via {transport}",
    micOff: "Microphone off",
    muted: "Muted",
    youSpeaking: "You are speaking",
    agentSpeaking: "Assistant is speaking",
    listening: "Listening",
    noWords: "(no words heard)",
    interrupted: "interrupted",
    notTranscribed: "(could not transcribe)",
    enableAudio: "Enable audio",
    tryAgain: "Try again",
    somethingWrong: "Something went wrong",
    insecureMessage: "Browsers only give the microphone to https:// pages (or localhost), and {origin} is not one. Open this page over https:// to talk.",
    "error.insecure_origin": "This page is not secure",
    "error.unsupported_browser": "Browser not supported",
    "error.mic_permission_denied": "Microphone access denied",
    "error.no_mic": "No microphone found",
    "error.mic_busy": "Microphone unavailable",
    "error.relay_unreachable": "Relay unreachable",
    "error.token_failed": "Could not start a session",
    "error.unauthorized": "Session key refused",
    "error.upstream_unreachable": "Voice service unreachable",
    "error.upstream_timeout": "Voice service timed out",
    "error.relay_busy": "Relay busy",
    "error.rate_limited": "Too many requests",
    "error.direct_mode_disabled": "Direct mode unavailable",
    "error.relay_error": "The relay refused the call",
    "error.connection_failed": "Could not connect",
    "error.connection_lost": "Connection lost",
    "error.call_ended": "Call ended",
    "error.autoplay_blocked": "Audio is blocked",
    "error.transcription_missing": "No transcript yet",
    "error.transcription_failed": "Transcription failed",
    "error.server_error": "Voice service error",
    "error.not_connected": "Not connected",
  },
  fr: {
    title: "Conversation vocale",
    subtitle: "Parlez avec l’assistant, ou écrivez.",
    skip: "Aller à la zone de message",
    upstreamEmulator: "Émulateur OpenAI intégré (hors ligne, sans clé OpenAI)",
    upstreamOpenai: "OpenAI Realtime",
    conversation: "Conversation",
    emptyTitle: "Prêt quand vous l’êtes",
    emptyBody: "Appuyez sur Démarrer l’appel, autorisez le micro et dites bonjour. Ce que vous dites et ce que l’assistant répond s’affichera ici, et y restera la prochaine fois.",
    live: "En cours",
    you: "Vous",
    assistant: "Assistant",
    earlier: "Conversation précédente",
    activity: "Activité vocale",
    micLevel: "Votre voix",
    agentLevel: "Voix de l’assistant",
    start: "Démarrer l’appel",
    continue: "Reprendre cette conversation",
    connecting: "Connexion…",
    reconnecting: "Reconnexion…",
    mute: "Couper le micro",
    unmute: "Réactiver le micro",
    end: "Raccrocher",
    messageLabel: "Écrire un message à l’assistant",
    messageIdle: "Démarrez un appel pour écrire",
    messageReady: "Écrivez un message…",
    send: "Envoyer",
    settings: "Réglages",
    language: "Langue",
    voice: "Voix",
    connection: "Connexion",
    modeRelay: "Par le relais (fonctionne sur les réseaux verrouillés)",
    modeDirect: "Directement vers OpenAI (accès à OpenAI requis)",
    clear: "Effacer la conversation",
    dismiss: "Fermer ce message",
    notConnected: "Non connecté",
    connected: "Connecté",
    callEnded: "Appel terminé",
    via: "par {transport}",
    micOff: "Micro éteint",
    muted: "Micro coupé",
    youSpeaking: "Vous parlez",
    agentSpeaking: "L’assistant parle",
    listening: "À l’écoute",
    noWords: "(aucun mot entendu)",
    interrupted: "interrompu",
    notTranscribed: "(transcription impossible)",
    enableAudio: "Activer le son",
    tryAgain: "Réessayer",
    somethingWrong: "Un problème est survenu",
    insecureMessage: "Les navigateurs ne donnent le micro qu’aux pages https:// (ou localhost), et {origin} n’en est pas une. Ouvrez cette page en https:// pour parler.",
    "error.insecure_origin": "Cette page n’est pas sécurisée",
    "error.unsupported_browser": "Navigateur non pris en charge",
    "error.mic_permission_denied": "Accès au micro refusé",
    "error.no_mic": "Aucun micro trouvé",
    "error.mic_busy": "Micro indisponible",
    "error.relay_unreachable": "Relais injoignable",
    "error.token_failed": "Impossible de démarrer une session",
    "error.unauthorized": "Clé de session refusée",
    "error.upstream_unreachable": "Service vocal injoignable",
    "error.upstream_timeout": "Le service vocal n’a pas répondu",
    "error.relay_busy": "Relais occupé",
    "error.rate_limited": "Trop de requêtes",
    "error.direct_mode_disabled": "Mode direct indisponible",
    "error.relay_error": "Le relais a refusé l’appel",
    "error.connection_failed": "Connexion impossible",
    "error.connection_lost": "Connexion perdue",
    "error.call_ended": "Appel terminé",
    "error.autoplay_blocked": "Le son est bloqué",
    "error.transcription_missing": "Pas encore de transcription",
    "error.transcription_failed": "Échec de la transcription",
    "error.server_error": "Erreur du service vocal",
    "error.not_connected": "Non connecté",
  },
  es: {
    title: "Chat de voz",
    subtitle: "Habla con el asistente, o escribe.",
    skip: "Ir al cuadro de mensaje",
    upstreamEmulator: "Emulador de OpenAI integrado (sin conexión, sin clave de OpenAI)",
    upstreamOpenai: "OpenAI Realtime",
    conversation: "Conversación",
    emptyTitle: "Listo cuando quieras",
    emptyBody: "Pulsa Iniciar llamada, permite el micrófono y saluda. Lo que digas y lo que responda el asistente aparecerá aquí, y seguirá aquí la próxima vez.",
    live: "Hablando ahora",
    you: "Tú",
    assistant: "Asistente",
    earlier: "Conversación anterior",
    activity: "Actividad de voz",
    micLevel: "Tu voz",
    agentLevel: "Voz del asistente",
    start: "Iniciar llamada",
    continue: "Continuar esta conversación",
    connecting: "Conectando…",
    reconnecting: "Reconectando…",
    mute: "Silenciar",
    unmute: "Activar micrófono",
    end: "Colgar",
    messageLabel: "Escribe un mensaje al asistente",
    messageIdle: "Inicia una llamada para escribir",
    messageReady: "Escribe un mensaje…",
    send: "Enviar",
    settings: "Ajustes",
    language: "Idioma",
    voice: "Voz",
    connection: "Conexión",
    modeRelay: "A través del relé (funciona en redes restringidas)",
    modeDirect: "Directo a OpenAI (requiere acceso a OpenAI)",
    clear: "Borrar la conversación",
    dismiss: "Cerrar este mensaje",
    notConnected: "Sin conectar",
    connected: "Conectado",
    callEnded: "Llamada finalizada",
    via: "por {transport}",
    micOff: "Micrófono apagado",
    muted: "Silenciado",
    youSpeaking: "Estás hablando",
    agentSpeaking: "El asistente está hablando",
    listening: "Escuchando",
    noWords: "(no se oyeron palabras)",
    interrupted: "interrumpido",
    notTranscribed: "(no se pudo transcribir)",
    enableAudio: "Activar el audio",
    tryAgain: "Reintentar",
    somethingWrong: "Algo salió mal",
    insecureMessage: "Los navegadores solo dan el micrófono a páginas https:// (o localhost), y {origin} no lo es. Abre esta página con https:// para hablar.",
    "error.insecure_origin": "Esta página no es segura",
    "error.unsupported_browser": "Navegador no compatible",
    "error.mic_permission_denied": "Acceso al micrófono denegado",
    "error.no_mic": "No se encontró ningún micrófono",
    "error.mic_busy": "Micrófono no disponible",
    "error.relay_unreachable": "Relé inaccesible",
    "error.token_failed": "No se pudo iniciar una sesión",
    "error.unauthorized": "Clave de sesión rechazada",
    "error.upstream_unreachable": "Servicio de voz inaccesible",
    "error.upstream_timeout": "El servicio de voz no respondió",
    "error.relay_busy": "Relé ocupado",
    "error.rate_limited": "Demasiadas solicitudes",
    "error.direct_mode_disabled": "Modo directo no disponible",
    "error.relay_error": "El relé rechazó la llamada",
    "error.connection_failed": "No se pudo conectar",
    "error.connection_lost": "Conexión perdida",
    "error.call_ended": "Llamada finalizada",
    "error.autoplay_blocked": "El audio está bloqueado",
    "error.transcription_missing": "Aún no hay transcripción",
    "error.transcription_failed": "Falló la transcripción",
    "error.server_error": "Error del servicio de voz",
    "error.not_connected": "Sin conectar",
  },
};

/** The page's languages: code -> its own name. */
export const LANGUAGES = Object.freeze({ en: "English", fr: "Français", es: "Español" });

const CHOICE_KEY = "realtime-relay.language";

/** The first of `preferred` (BCP 47 tags, e.g. navigator.languages) the page has, else "en". */
export function pickLanguage(preferred) {
  for (const tag of preferred || []) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in STRINGS) return base;
  }
  return "en";
}

/** The person's own choice on this page, if they made one. */
export function savedLanguage() {
  try {
    const saved = globalThis.localStorage?.getItem(CHOICE_KEY);
    return saved in STRINGS ? saved : null;
  } catch {
    return null;
  }
}

export function saveLanguage(language) {
  try {
    globalThis.localStorage?.setItem(CHOICE_KEY, language);
  } catch {
    /* storage refused (private mode, quota): the choice lasts this page */
  }
}

/** `t(key, vars)` in `language` (falls back to English, then to the key). */
export function translator(language) {
  const table = STRINGS[language] || STRINGS.en;
  return (key, vars = {}) => {
    const text = table[key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
  };
}

/** Fills `[data-i18n]` texts and `[data-i18n-<attr>]` attributes under `root`. */
export function apply(root, t, language) {
  root.documentElement?.setAttribute("lang", language);
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const attr of ["aria-label", "placeholder", "title"]) {
    const data = `data-i18n-${attr}`;
    for (const el of root.querySelectorAll(`[${data}]`)) el.setAttribute(attr, t(el.getAttribute(data)));
  }
}
