// Starts the vendored GraphiQL against this origin's /graphql (send your API key in the
// Headers tab as {"Authorization": "Bearer ck_…"}).
(function () {
  "use strict";
  var fetcher = GraphiQL.createFetcher({ url: window.location.href.split("?")[0] });
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true }));
})();
