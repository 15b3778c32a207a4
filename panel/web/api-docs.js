// Swagger UI for /api/v1/openapi.json, from the panel's own copy (panel/web/vendor/swagger-ui).
// No validator badge (it would load an image from validator.swagger.io), and credentials typed into
// "Authorize" stay in this tab only (never localStorage).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  persistAuthorization: false,
});
