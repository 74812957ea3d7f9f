// Loaded synchronously in <head>: marks the page as scripted before first paint, so
// no-JS-only controls never flash. A file rather than an inline script: the
// Content-Security-Policy allows scripts from this origin only.
document.documentElement.classList.replace("no-js", "js");
