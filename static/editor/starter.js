// What a new MJML template starts from: a header, a message, a button and the footer every
// marketing email needs (the unsubscribe link).
export const STARTER_MJML = `<mjml>
  <mj-head>
    <mj-attributes>
      <mj-all font-family="Helvetica, Arial, sans-serif" />
      <mj-text font-size="16px" line-height="24px" color="#1f2933" />
    </mj-attributes>
  </mj-head>
  <mj-body background-color="#f4f5f7">
    <mj-section padding="24px 0 8px">
      <mj-column>
        <mj-text font-size="20px" font-weight="bold" align="center">Your product</mj-text>
      </mj-column>
    </mj-section>
    <mj-section background-color="#ffffff" padding="24px">
      <mj-column>
        <mj-text>Hi {{ firstName ?? "there" }},</mj-text>
        <mj-text>Write your message here.</mj-text>
        <mj-button background-color="#2563eb" href="https://example.com">Get started</mj-button>
      </mj-column>
    </mj-section>
    <mj-section padding="16px 0">
      <mj-column>
        <mj-text font-size="12px" color="#6b7785" align="center">You get this email because you signed up. <a href="{{ unsubscribeUrl }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>`;
