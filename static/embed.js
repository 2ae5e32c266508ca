// Canopy's embeddable player. On any site:
//
//   <script type="module" src="https://CANOPY-HOST/embed.js"></script>
//   <canopy-player stream="demo"></canopy-player>
//
// The player's modules, and its server unless a server="…" attribute says
// otherwise, come from the host this script was loaded from.
export { CanopyPlayer } from './static/js/player-element.js';
